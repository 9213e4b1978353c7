import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import {
  RLWE_N2048_Q44 as P, paramsById, maxInnerDim, randomSeed, expandMask, MaskStream, maskStreamPieces, SecretKey, encryptBlock,
  encryptFresh, decryptBlock, resultNoiseStd, resultErrorBound, serverProductReference, sampleGaussian,
  gaussianMagnitudeCdt, gaussianTablePmf, choosePlaintextBits, MIN_PLAINTEXT_BITS,
} from './index.js';
import { clientCryptoKernel } from '../kernels/client-crypto.js';

const N = P.ringDegree;

function randInt(lo: number, hi: number): number {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/** Exact W m in plain integers: y[o*N + t] = sum_i w[o*d + i] m[i*N + t]. */
function plainProduct(w: Int8Array, rows: number, d: number, m: Int32Array): Float64Array {
  const y = new Float64Array(rows * N);
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < d; i++) {
      const wv = w[o * d + i];
      if (wv === 0) continue;
      for (let t = 0; t < N; t++) y[o * N + t] += wv * m[i * N + t];
    }
  }
  return y;
}

function rowSqNorm(w: Int8Array, o: number, d: number): number {
  let s = 0;
  for (let i = 0; i < d; i++) s += w[o * d + i] ** 2;
  return s;
}

/** Encrypt -> reference server product -> decrypt; returns the errors y - W m. */
function roundTrip(key: SecretKey, w: Int8Array, rows: number, d: number, m: Int32Array, blockIndex = 0): Float64Array {
  const seed = randomSeed();
  const b = encryptBlock(P, key, m, d, seed, blockIndex);
  assert.equal(b.length, d * N * 5);
  const a = expandMask(P, seed, blockIndex, d);
  const { aOut, bOut } = serverProductReference(P, w, rows, d, a, b);
  const y = decryptBlock(P, key, aOut, bOut, rows);
  const exact = plainProduct(w, rows, d, m);
  const err = new Float64Array(rows * N);
  for (let k = 0; k < err.length; k++) err[k] = y[k] - exact[k];
  return err;
}

function assertWithinBound(err: Float64Array, w: Int8Array, rows: number, d: number, key: SecretKey, what: string): void {
  for (let o = 0; o < rows; o++) {
    const bound = resultErrorBound(P, rowSqNorm(w, o, d), key.hammingWeight);
    for (let t = 0; t < N; t++) {
      const e = err[o * N + t];
      if (Math.abs(e) > bound) assert.fail(`${what}: row ${o} token ${t}: error ${e} exceeds bound ${bound}`);
    }
  }
}

test('parameter set: lookup by id, unknown id throws, documented constants', () => {
  assert.equal(paramsById(1), P);
  assert.throws(() => paramsById(99), /unknown RLWE parameter set id 99/);
  assert.equal(P.ringDegree, 2048);
  assert.equal(P.logQ, 44);
  assert.equal(P.logQ - P.plaintextBits, 16);
  // HE standard: N = 2048, ternary secret, sigma 3.2 -> log q <= 54 for 128-bit security
  assert.ok(P.logQ <= 54 && P.errorStd === 3.2 && P.securityBits === 128);
});

test('maxInnerDim is the largest K with 2 * 127 * 127 * K < 2^28 (and other widths)', () => {
  for (const [ab, wb] of [[8, 8], [6, 8], [8, 4], [10, 10]]) {
    const K = maxInnerDim(P, ab, wb);
    const per = 2 * (2 ** (ab - 1) - 1) * (2 ** (wb - 1) - 1);
    assert.ok(per * K < 2 ** 28, `${ab}/${wb}: K = ${K} too large`);
    assert.ok(per * (K + 1) >= 2 ** 28, `${ab}/${wb}: K = ${K} not the largest`);
  }
  assert.ok(maxInnerDim(P) >= 8192);
});

test('secret key: ternary coefficients, about 1/3 each (chi-square), hamming weight', () => {
  const counts = [0, 0, 0];
  const keys = 20;
  for (let k = 0; k < keys; k++) {
    const key = SecretKey.generate(P);
    const s = SecretKey.coefficients(key);
    assert.equal(s.length, N);
    let nz = 0;
    for (const c of s) {
      assert.ok(c === -1 || c === 0 || c === 1);
      counts[c + 1]++;
      if (c !== 0) nz++;
    }
    assert.equal(key.hammingWeight, nz);
  }
  const expected = (keys * N) / 3;
  const chi2 = counts.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 18.4, `chi-square ${chi2} (2 dof, p = 1e-4 threshold 18.4), counts ${counts}`);
});

test('secret key file: round trip, and corrupted / truncated / foreign files are refused', () => {
  const key = SecretKey.generate(P);
  const bytes = key.toFileBytes();
  const back = SecretKey.fromFileBytes(bytes);
  assert.deepEqual(SecretKey.coefficients(back), SecretKey.coefficients(key));
  assert.equal(back.hammingWeight, key.hammingWeight);
  // decrypting with the reloaded key works
  const m = new Int32Array(3 * N).map(() => randInt(-127, 127));
  const w = Int8Array.from([5, -7, 127]);
  const seed = randomSeed();
  const b = encryptBlock(P, key, m, 3, seed, 0);
  const { aOut, bOut } = serverProductReference(P, w, 1, 3, expandMask(P, seed, 0, 3), b);
  const y = decryptBlock(P, back, aOut, bOut, 1);
  const exact = plainProduct(w, 1, 3, m);
  const bound = resultErrorBound(P, rowSqNorm(w, 0, 3), key.hammingWeight);
  for (let t = 0; t < N; t++) assert.ok(Math.abs(y[t] - exact[t]) <= bound, `token ${t}: ${y[t]} vs ${exact[t]}`);

  const flipped = bytes.slice();
  flipped[100] ^= 1;
  assert.throws(() => SecretKey.fromFileBytes(flipped), /checksum|coefficient/);
  assert.throws(() => SecretKey.fromFileBytes(bytes.subarray(0, bytes.length - 1)), /bytes, expected/);
  const magic = bytes.slice();
  magic[0] = 0x58;
  assert.throws(() => SecretKey.fromFileBytes(magic), /not a helora secret key/);
  assert.throws(() => SecretKey.fromFileBytes(new Uint8Array(10)), /too short/);
  assert.throws(() => JSON.stringify({ key }), /never serialized/);
  assert.equal((key as unknown as { toBytes?: unknown }).toBytes, undefined);
});

test('discrete Gaussian sampler: std, mean, tail cut and the table against the ideal pmf', () => {
  const sigma = P.errorStd;
  const cut = P.errorTailCut;
  let z = 0, v = 0;
  for (let k = -cut; k <= cut; k++) { const r = Math.exp(-(k * k) / (2 * sigma * sigma)); z += r; v += k * k * r; }
  const idealStd = Math.sqrt(v / z);
  const pmf = gaussianTablePmf(gaussianMagnitudeCdt(sigma, cut));
  for (let k = -cut; k <= cut; k++) {
    const ideal = Math.exp(-(k * k) / (2 * sigma * sigma)) / z;
    assert.ok(Math.abs(pmf[k + cut] - ideal) < 2 ** -31, `pmf(${k}) = ${pmf[k + cut]}, ideal ${ideal}`);
  }
  const count = 400_000;
  const e = sampleGaussian(P, count);
  let s1 = 0, s2 = 0, mx = 0;
  const hist = new Float64Array(2 * cut + 1);
  for (const x of e) { s1 += x; s2 += x * x; mx = Math.max(mx, Math.abs(x)); hist[x + cut]++; }
  const mean = s1 / count, std = Math.sqrt(s2 / count - mean * mean);
  assert.ok(Math.abs(mean) < 0.03, `mean ${mean}`);
  assert.ok(Math.abs(std / idealStd - 1) < 0.01, `std ${std}, ideal ${idealStd}`);
  assert.ok(mx <= cut);
  // chi-square over |e| <= 8 bins plus one tail bin
  let chi2 = 0, tailObs = 0, tailExp = 0;
  for (let k = -cut; k <= cut; k++) {
    const ex = count * Math.exp(-(k * k) / (2 * sigma * sigma)) / z;
    if (Math.abs(k) <= 8) chi2 += (hist[k + cut] - ex) ** 2 / ex;
    else { tailObs += hist[k + cut]; tailExp += ex; }
  }
  chi2 += (tailObs - tailExp) ** 2 / tailExp;
  assert.ok(chi2 < 45.3, `chi-square ${chi2} over 18 dof (p = 1e-4 threshold 45.3)`);
});

test('encryption noise inside the kernel: 16 b\' - a*s - Delta m has the std of e plus upload rounding', () => {
  const key = SecretKey.generate(P);
  const d = 8;
  const m = new Int32Array(d * N).map(() => randInt(-127, 127));
  const seed = randomSeed();
  const b = encryptBlock(P, key, m, d, seed, 3);
  const a = expandMask(P, seed, 3, d);
  const k = clientCryptoKernel(N);
  k.loadSecret(SecretKey.coefficients(key), key);
  const q = 1n << 44n;
  let s1 = 0, s2 = 0, mx = 0;
  for (let i = 0; i < d; i++) {
    const ai: number[] = [];
    for (let t = 0; t < N; t++) {
      const o = (i * N + t) * 6;
      let x = 0;
      for (let j = 5; j >= 0; j--) x = x * 256 + a[o + j];
      ai.push(x % 2 ** 44);
    }
    const as = k.exactNttProduct44(ai);
    for (let t = 0; t < N; t++) {
      const o = (i * N + t) * 5;
      let bv = 0n;
      for (let j = 4; j >= 0; j--) bv = bv * 256n + BigInt(b[o + j]);
      let r = (bv * 16n - as[t] - (BigInt(m[i * N + t]) << 16n)) % q;
      if (r < 0n) r += q;
      if (r >= q / 2n) r -= q;
      const x = Number(r);
      s1 += x; s2 += x * x; mx = Math.max(mx, Math.abs(x));
    }
  }
  const cnt = d * N;
  const mean = s1 / cnt, std = Math.sqrt(s2 / cnt);
  const expected = Math.sqrt(P.errorStd ** 2 + (16 * 16 + 2) / 12);
  assert.ok(Math.abs(std / expected - 1) < 0.05, `std ${std}, expected ${expected}`);
  assert.ok(Math.abs(mean) < 0.2, `mean ${mean} (rounding must be unbiased)`);
  assert.ok(mx <= P.errorTailCut + 8, `max ${mx}`);
});

test('expandMask: deterministic, 6-byte AES-128-CTR format, blocks and seeds differ, streams do not overlap', () => {
  const seed = randomSeed();
  const d = 8;
  const m0 = expandMask(P, seed, 0, d);
  assert.equal(m0.length, d * N * 6);
  assert.deepEqual(expandMask(P, seed, 0, d), m0);
  const m1 = expandMask(P, seed, 1, d);
  assert.notDeepEqual(m1, m0);
  assert.notDeepEqual(expandMask(P, randomSeed(), 0, d), m0);
  // independent construction of the format: IV = blockIndex (big endian) in the top 32 bits
  const iv = new Uint8Array(16);
  iv[0] = 0x12; iv[1] = 0x34; iv[2] = 0x56; iv[3] = 0x78;
  const want = createCipheriv('aes-128-ctr', seed, iv).update(new Uint8Array(d * N * 6));
  assert.deepEqual(expandMask(P, seed, 0x12345678, d), new Uint8Array(want));
  // block 1 does not start anywhere inside block 0's stream
  const head = Buffer.from(m1.subarray(0, 16)).toString('hex');
  for (let o = 0; o < m0.length; o += 16) assert.notEqual(Buffer.from(m0.subarray(o, o + 16)).toString('hex'), head);
  // chunked streaming (what encryptBlock uses) gives the same bytes
  const s = new MaskStream(seed, 0);
  const parts = [s.next(N * 6 * 3), s.next(N * 6 * 5)];
  assert.deepEqual(new Uint8Array(Buffer.concat(parts)), m0);
  // pieces expanded independently (the server's workers) give the same bytes, from any aligned offset
  for (const [off, len, count] of [[0, m0.length, 3], [N * 6 * 2, N * 6 * 5 + 16, 4], [48, 100, 7], [16, 0, 2]] as const) {
    const pieces = maskStreamPieces(0, off, len, count);
    assert.ok(pieces.length <= count && pieces.every((p) => p.start % 16 === 0));
    const got = Buffer.concat(pieces.map((p) => createCipheriv('aes-128-ctr', seed, p.iv).update(new Uint8Array(p.length))));
    assert.deepEqual(new Uint8Array(got), m0.subarray(off, off + len), `offset ${off}, ${len} bytes, ${count} pieces`);
  }
  assert.throws(() => maskStreamPieces(0, 8, 16, 2), /multiple of 16/);
  // 44-bit values look uniform: mean near 2^43
  let sum = 0;
  for (let i = 0; i < d * N; i++) {
    let x = 0;
    for (let j = 5; j >= 0; j--) x = x * 256 + m0[i * 6 + j];
    sum += x % 2 ** 44;
  }
  assert.ok(Math.abs(sum / (d * N) / 2 ** 43 - 1) < 0.02);
  assert.throws(() => expandMask(P, new Uint8Array(32), 0, 1), /16 bytes/);
  assert.throws(() => expandMask(P, seed, -1, 1), /blockIndex/);
});

test('seeds: fresh every time, a reused (seed, block) is refused, other blocks of a request are fine', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const s = randomSeed();
    assert.equal(s.length, 16);
    seen.add(Buffer.from(s).toString('hex'));
  }
  assert.equal(seen.size, 1000);
  const key = SecretKey.generate(P);
  const m = new Int32Array(N);
  const seed = randomSeed();
  encryptBlock(P, key, m, 1, seed, 0);
  encryptBlock(P, key, m, 1, seed, 1);
  assert.throws(() => encryptBlock(P, key, m, 1, seed, 0), /already used/);
  assert.throws(() => encryptBlock(P, key, m, 1, Uint8Array.from(seed), 1), /already used/);
  // a different key has its own registry
  encryptBlock(P, SecretKey.generate(P), m, 1, seed, 0);
  const f1 = encryptFresh(P, key, m, 1), f2 = encryptFresh(P, key, m, 1);
  assert.notDeepEqual(f1.seed, f2.seed);
  assert.notDeepEqual(f1.b, f2.b);
});

test('encryptBlock / decryptBlock validate their inputs', () => {
  const key = SecretKey.generate(P);
  assert.throws(() => encryptBlock(P, key, new Int32Array(N - 1), 1, randomSeed(), 0), /d\*N/);
  const big = new Int32Array(N);
  big[5] = 2 ** 27;
  assert.throws(() => encryptBlock(P, key, big, 1, randomSeed(), 0), /outside/);
  assert.throws(() => decryptBlock(P, key, new Uint32Array(N), new Uint32Array(N + 1), 1), /rows\*N/);
});

test('server reference equals a BigInt computation on a small case', () => {
  const key = SecretKey.generate(P);
  const d = 3, rows = 2;
  const m = new Int32Array(d * N).map(() => randInt(-127, 127));
  const w = Int8Array.from([127, -128, 3, -127, 0, 127]);
  const seed = randomSeed();
  const b = encryptBlock(P, key, m, d, seed, 0);
  const a = expandMask(P, seed, 0, d);
  const { aOut, bOut } = serverProductReference(P, w, rows, d, a, b);
  const q = 1n << 44n;
  for (let o = 0; o < rows; o++) {
    for (let t = 0; t < N; t += 97) {
      let sa = 0n, sb = 0n;
      for (let i = 0; i < d; i++) {
        let av = 0n, bv = 0n;
        for (let j = 5; j >= 0; j--) av = av * 256n + BigInt(a[(i * N + t) * 6 + j]);
        for (let j = 4; j >= 0; j--) bv = bv * 256n + BigInt(b[(i * N + t) * 5 + j]);
        sa += BigInt(w[o * d + i]) * (av % q);
        sb += BigInt(w[o * d + i]) * (bv << 4n);
      }
      const round = (x: bigint): number => Number((((x % q) + q) % q + 2048n) >> 12n) % 2 ** 32;
      assert.equal(aOut[o * N + t], round(sa));
      assert.equal(bOut[o * N + t], round(sb));
    }
  }
});

test('end to end: decrypt(server(encrypt(m))) == W m within the bound, small d, extremes, d = 2048 and 8192', () => {
  const key = SecretKey.generate(P);
  // small d, random values
  {
    const d = 7, rows = 3;
    const m = new Int32Array(d * N).map(() => randInt(-127, 127));
    const w = new Int8Array(rows * d).map(() => randInt(-127, 127));
    assertWithinBound(roundTrip(key, w, rows, d, m), w, rows, d, key, 'd=7');
  }
  // extremes: all +-127 in m and W (including all the same sign: the largest |W m|)
  for (const d of [2048, 8192]) {
    const rows = 2;
    const m = new Int32Array(d * N).map((_, k) => (k % N < N / 2 ? 127 : -127));
    const w = new Int8Array(rows * d).map((_, k) => (k < d ? 127 : (Math.random() < 0.5 ? 127 : -127)));
    const err = roundTrip(key, w, rows, d, m, 5);
    assertWithinBound(err, w, rows, d, key, `extremes d=${d}`);
  }
  // random values at d = 2048
  {
    const d = 2048, rows = 2;
    const m = new Int32Array(d * N).map(() => randInt(-127, 127));
    const w = new Int8Array(rows * d).map(() => randInt(-127, 127));
    assertWithinBound(roundTrip(key, w, rows, d, m), w, rows, d, key, 'random d=2048');
  }
});

test('measured error statistics match resultNoiseStd and never exceed resultErrorBound', () => {
  const key = SecretKey.generate(P);
  const d = 2048, rows = 4, trials = 2;
  const w = new Int8Array(rows * d).map(() => (Math.random() < 0.5 ? 127 : -127));
  const sq = rowSqNorm(w, 0, d);
  const sigmaE = resultNoiseStd(P, sq, key.hammingWeight);
  let s1 = 0, s2 = 0, cnt = 0;
  for (let trial = 0; trial < trials; trial++) {
    const m = new Int32Array(d * N).map(() => randInt(-127, 127));
    const err = roundTrip(key, w, rows, d, m);
    assertWithinBound(err, w, rows, d, key, `trial ${trial}`);
    for (const e of err) { s1 += e; s2 += e * e; cnt++; }
  }
  const mean = s1 / cnt;
  const std = Math.sqrt(s2 / cnt - mean * mean);
  // the decrypted error is round(E): its variance is Var(E) + 1/12 for a spread-out E (Sheppard)
  const expected = Math.sqrt(sigmaE ** 2 + 1 / 12);
  assert.ok(Math.abs(std / expected - 1) < 0.1, `measured std ${std}, model ${expected} (sigma_E ${sigmaE})`);
  assert.ok(Math.abs(mean) < 0.1, `mean ${mean}`);
});

test('a wrong key decrypts to garbage (error spread over the whole plaintext range)', () => {
  const key = SecretKey.generate(P);
  const other = SecretKey.generate(P);
  const d = 16, rows = 2;
  const m = new Int32Array(d * N).map(() => randInt(-127, 127));
  const w = new Int8Array(rows * d).map(() => randInt(-127, 127));
  const seed = randomSeed();
  const b = encryptBlock(P, key, m, d, seed, 0);
  const { aOut, bOut } = serverProductReference(P, w, rows, d, expandMask(P, seed, 0, d), b);
  const y = decryptBlock(P, other, aOut, bOut, rows);
  const exact = plainProduct(w, rows, d, m);
  let s2 = 0, small = 0;
  for (let k = 0; k < y.length; k++) {
    const e = y[k] - exact[k];
    s2 += e * e;
    if (Math.abs(e) <= 1000) small++;
  }
  const std = Math.sqrt(s2 / y.length);
  const uniformStd = 2 ** 28 / Math.sqrt(12);
  assert.ok(std > 0.8 * uniformStd, `wrong-key error std ${std}, uniform would be ${uniformStd}`);
  assert.ok(small < 5, `${small} results decrypted close to the truth under the wrong key`);
});

test('choosePlaintextBits: the smallest width holding the result bound plus the error bound, capped at P', () => {
  const sq = 127 * 127 * 2048;
  const h = 1365;
  const seen = new Set<number>();
  for (const B of [0, 1, 2, 100, 12345, 2 ** 20, 2 ** 24 + 7, 2 ** 26 - 50, 2 ** 26, 2 ** 27, 1e12]) {
    const p = choosePlaintextBits(P, B, sq, h);
    seen.add(p);
    assert.ok(p >= MIN_PLAINTEXT_BITS && p <= P.plaintextBits, `B=${B}: ${p}`);
    if (p < P.plaintextBits) {
      assert.ok(B + resultErrorBound(P, sq, h, 8, p) + 1 <= 2 ** (p - 1), `B=${B}: P'=${p} does not hold the bound`);
    }
    if (p > MIN_PLAINTEXT_BITS) {
      assert.ok(B + resultErrorBound(P, sq, h, 8, p - 1) + 2 > 2 ** (p - 2), `B=${B}: P'=${p} is not the smallest`);
    }
  }
  assert.equal(choosePlaintextBits(P, 1e12, sq, h), P.plaintextBits);
  assert.equal(choosePlaintextBits(P, 0, sq, h), MIN_PLAINTEXT_BITS);
  assert.ok(seen.size >= 8);
  assert.throws(() => choosePlaintextBits(P, -1, sq, h), /result bound/);
  assert.throws(() => choosePlaintextBits(P, NaN, sq, h), /result bound/);
  // the error in result units halves with every bit removed
  const s28 = resultNoiseStd(P, sq, h);
  assert.ok(Math.abs(resultNoiseStd(P, sq, h, 20) * 256 - s28) < 1e-12 * s28);
});

test('encryptBlock / decryptBlock accept only plaintext widths in [2, P]', () => {
  const key = SecretKey.generate(P);
  const m = new Int32Array(N);
  for (const bad of [1, 1.5, P.plaintextBits + 1]) {
    assert.throws(() => encryptBlock(P, key, m, 1, randomSeed(), 0, bad), /plaintext bits/);
    assert.throws(() => decryptBlock(P, key, new Uint32Array(N), new Uint32Array(N), 1, bad), /plaintext bits/);
  }
  // a message that fits P but not a smaller width is refused at that width
  m[5] = 2 ** 10;
  assert.throws(() => encryptBlock(P, key, m, 1, randomSeed(), 0, 11), /outside \[-2\^10, 2\^10\)/);
  assert.equal(encryptBlock(P, key, m, 1, randomSeed(), 0, 12).length, N * 5);
});
