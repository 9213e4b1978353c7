import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { ClientCryptoKernel, type MessageArray, type MessageType } from './client-crypto.js';
import { ENCRYPT_PAIR_MAX, fftProductErrorBound } from './fft-product.js';
import { negacyclicMulRef, NTT_PRIMES } from './ntt-reference.js';

function randomTernary(n: number): Int8Array {
  const s = new Int8Array(n);
  for (let i = 0; i < n; i++) s[i] = randomInt(3) - 1;
  return s;
}

function random44(n: number): number[] {
  const a: number[] = [];
  for (let i = 0; i < n; i++) a.push(randomInt(2 ** 22) * 2 ** 22 + randomInt(2 ** 22));
  return a;
}

function toBig(x: ArrayLike<number>): bigint[] {
  return Array.from(x, (v) => BigInt(v));
}

function assertSame(got: BigInt64Array, want: bigint[], what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}: coefficient ${i}: got ${got[i]}, want ${want[i]}`);
  }
}

test('schoolbook reference: X^(n-1) * X = -1 and small products by hand', () => {
  const n = 4;
  // (1 + 2X) * (3 + X^3) = 3 + 6X + X^3 + 2X^4 = 3 - 2 + 6X + X^3
  assert.deepEqual(negacyclicMulRef([1n, 2n, 0n, 0n], [3n, 0n, 0n, 1n]), [1n, 6n, 0n, 1n]);
  assert.deepEqual(negacyclicMulRef([0n, 0n, 0n, 1n], [0n, 1n, 0n, 0n]), [-1n, 0n, 0n, 0n]);
});

for (const n of [16, 32, 64, 256, 2048]) {
  test(`NTT product a*s (44-bit a, ternary s) equals the schoolbook product, N = ${n}`, () => {
    const k = new ClientCryptoKernel(n);
    const s = randomTernary(n);
    k.loadSecret(s, s);
    const a = random44(n);
    assertSame(k.exactNttProduct44(a), negacyclicMulRef(toBig(a), toBig(s)), 'random');
  });
}

test('NTT product at the extremes: a = 2^44 - 1 everywhere, s = all +1 / all -1 / single -1', () => {
  const n = 2048;
  const k = new ClientCryptoKernel(n);
  const a = new Array<number>(n).fill(2 ** 44 - 1);
  for (const fill of [1, -1]) {
    const s = new Int8Array(n).fill(fill);
    k.loadSecret(s, s);
    assertSame(k.exactNttProduct44(a), negacyclicMulRef(toBig(a), toBig(s)), `s = ${fill}`);
  }
  const s = new Int8Array(n);
  s[n - 1] = -1;
  k.loadSecret(s, s);
  const a2 = random44(n);
  assertSame(k.exactNttProduct44(a2), negacyclicMulRef(toBig(a2), toBig(s)), 'X^(N-1) rotation');
  // residues equal to p - 1 and p hit the lazy-reduction edges
  const a3 = Array.from({ length: n }, (_, i) => [NTT_PRIMES[0] - 1, NTT_PRIMES[1], 0, 2 ** 32 - 1, 2 ** 32][i % 5]);
  const s3 = randomTernary(n);
  k.loadSecret(s3, s3);
  assertSame(k.exactNttProduct44(a3), negacyclicMulRef(toBig(a3), toBig(s3)), 'edge residues');
});

test('NTT product for 32-bit a (decryption path), random and all 2^32 - 1', () => {
  const n = 1024;
  const k = new ClientCryptoKernel(n);
  const s = randomTernary(n);
  k.loadSecret(s, s);
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = randomInt(2 ** 32 - 1) + (i & 1);
  assertSame(k.exactNttProduct32(a), negacyclicMulRef(toBig(a), toBig(s)), 'random u32');
  const full = new Uint32Array(n).fill(0xffffffff);
  const ones = new Int8Array(n).fill(1);
  k.loadSecret(ones, ones);
  assertSame(k.exactNttProduct32(full), negacyclicMulRef(toBig(full), toBig(ones)), 'all ones');
});

for (const n of [16, 64, 256]) {
  test(`decrypt kernel (FFT): y = round((b - a*s mod 2^32) / 2^sh), centered, equals the schoolbook, N = ${n}`, () => {
    const k = new ClientCryptoKernel(n);
    const s = randomTernary(n);
    k.loadSecret(s, s);
    const rows = 3;
    const v = k.beginDecrypt(rows);
    const a = new Uint32Array(rows * n), b = new Uint32Array(rows * n);
    for (let i = 0; i < a.length; i++) { a[i] = randomInt(2 ** 32 - 1); b[i] = randomInt(2 ** 32 - 1); }
    a.fill(2 ** 31, 0, n); // row 0: a = -2^31 everywhere (the largest |a|)
    v.a.set(a); v.b.set(b);
    k.decrypt(4);
    const y = Int32Array.from(v.y);
    for (let r = 0; r < rows; r++) {
      const as = negacyclicMulRef(toBig(a.subarray(r * n, (r + 1) * n)), toBig(s));
      for (let t = 0; t < n; t++) {
        const vv = BigInt.asUintN(32, BigInt(b[r * n + t]) - as[t]);
        const want = Number(BigInt.asIntN(32, vv + 8n) >> 4n);
        assert.equal(y[r * n + t], want, `row ${r} coefficient ${t}`);
      }
    }
  });
}

/** The exact a*s for integers |a_i| < 2^40 as numbers (|a*s| < 2^52: exact in doubles). */
function exactSigned(k: ClientCryptoKernel, a: ArrayLike<number>): number[] {
  const unsigned = k.exactNttProduct44(Array.from(a, (x) => (x < 0 ? x + 2 ** 44 : x)));
  const negative = k.exactNttProduct44(Array.from(a, (x) => (x < 0 ? 1 : 0)));
  return Array.from(unsigned, (u, i) => Number(u - (negative[i] << 44n)));
}

for (const n of [2048, 4096]) {
  test(`decryption FFT: measured error of a*s stays below the documented bound, itself below 1/2 (worst-case magnitudes), N = ${n}`, () => {
    const k = new ClientCryptoKernel(n);
    let worst = 0;
    const secrets = [new Int8Array(n).fill(1), new Int8Array(n).fill(-1), randomTernary(n)];
    for (const s of secrets) {
      k.loadSecret(s, s);
      const operands = [new Int32Array(n).fill(-(2 ** 31)), new Int32Array(n).fill(2 ** 31 - 1),
        Int32Array.from({ length: n }, (_, i) => (i % 2 ? 2 ** 31 - 1 : -(2 ** 31))),
        ...Array.from({ length: 4 }, () => Int32Array.from({ length: n }, () => randomInt(2 ** 32 - 1) | 0))];
      for (const a of operands) {
        const raw = k.fftProductRaw(a);
        const want = exactSigned(k, a);
        for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(raw[i] - want[i]));
      }
    }
    const bound = fftProductErrorBound(n);
    assert.ok(bound < 0.5, `bound ${bound} must stay below 1/2 for exact rounding`);
    assert.ok(worst < bound, `max FFT error ${worst} >= the documented bound ${bound}`);
    assert.ok(worst > 0, 'the FFT is floating point: some rounding error must show');
  });
}

test('paired encryption operands (up to 2^33 + 2^10): measured FFT error below their bound, below 1/2 at N = 2048 only', () => {
  const n = 2048;
  const k = new ClientCryptoKernel(n);
  assert.ok(k.pairHigh && !new ClientCryptoKernel(4096).pairHigh);
  const bound = fftProductErrorBound(n, ENCRYPT_PAIR_MAX);
  assert.ok(bound < 0.5 && fftProductErrorBound(4096, ENCRYPT_PAIR_MAX) > 0.5, `bound ${bound}`);
  let worst = 0;
  for (const s of [new Int8Array(n).fill(1), randomTernary(n)]) {
    k.loadSecret(s, s);
    const top = ENCRYPT_PAIR_MAX;
    const operands = [new Array<number>(n).fill(-(2 ** 33)), new Array<number>(n).fill(top),
      Array.from({ length: n }, (_, i) => (i % 2 ? top : -(2 ** 33))),
      Array.from({ length: n }, () => randomInt(2 ** 22) * 2 ** 11 + randomInt(2 ** 11) - 2 ** 32)];
    for (const a of operands) {
      const raw = k.fftProductRaw(a);
      const want = exactSigned(k, a);
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(raw[i] - want[i]));
    }
  }
  assert.ok(worst < bound, `max FFT error ${worst} >= the documented bound ${bound}`);
});

test('decrypt kernel at N = 2048: the FFT equals the exact NTT decryption; accumulate sums terms; transpose is token-major', () => {
  const n = 2048;
  const k = new ClientCryptoKernel(n);
  const s = randomTernary(n);
  k.loadSecret(s, s);
  const rows = 6;
  const rnd = (): Uint32Array => Uint32Array.from({ length: rows * n }, () => randomInt(2 ** 32 - 1));
  for (const sh of [4, 12, 20]) {
    const terms = [0, 1].map(() => ({ a: rnd(), b: rnd() }));
    const exact = terms.map(({ a, b }) => {
      const v = k.beginDecrypt(rows);
      v.a.set(a); v.b.set(b);
      k.decrypt(sh, { exactNtt: true });
      return Int32Array.from(v.y);
    });
    const v = k.beginDecrypt(rows);
    terms.forEach(({ a, b }, term) => {
      v.a.set(a); v.b.set(b);
      k.decrypt(sh, { accumulate: term > 0 });
      if (term === 0) assert.deepEqual(Int32Array.from(v.y), exact[0], `sh = ${sh}: one term`);
    });
    const sum = exact[0].map((x, i) => x + exact[1][i]);
    assert.deepEqual(Int32Array.from(v.y), sum, `sh = ${sh}: two terms`);
    k.transpose();
    const yT = Int32Array.from(v.yT);
    for (let r = 0; r < rows; r++) for (let t = 0; t < n; t++) assert.equal(yT[t * rows + r], sum[r * n + t]);
  }
});

/** One run of the encryption kernel on chosen inputs (a: 6-byte masks; rnd: draws, then sign/tie bytes); returns a copy of out. */
function encryptOnce(k: ClientCryptoKernel, nPolys: number, a: Uint8Array, m: MessageArray, rnd: Uint8Array,
  shifts: { delta: number; up: number; outBytes: number }, exactNtt: boolean, pairs = true): Uint8Array {
  const v = k.beginEncrypt(nPolys, shifts.outBytes, m.constructor as MessageType<MessageArray>);
  v.a.set(a); v.m.set(m); v.rnd.set(rnd);
  assert.ok(k.encrypt(shifts.delta, shifts.up, 2 ** 16, { exactNtt, pairs }));
  return Uint8Array.from(v.out);
}

test('encryption kernel: the FFT product path equals the exact NTT path bit for bit (random and extreme masks); int8/int16 messages', () => {
  const n = 2048;
  const k = new ClientCryptoKernel(n);
  k.loadNoiseTable(Uint32Array.from([2 ** 30, 2 ** 31, 3 * 2 ** 30]));
  const nPolys = 5;
  const masks = new Uint8Array(nPolys * n * 6);
  for (let i = 0; i < masks.length; i++) masks[i] = randomInt(256);
  masks.fill(0xff, 0, n * 6); // a = 2^44 - 1 (low word -1, high 12 bits all ones)
  for (let i = 0; i < n; i++) { // low word 2^31 (the most negative int32), high part 2^12 - 1
    masks.set([0, 0, 0, 0x80, 0xff, 0x0f], (n + i) * 6);
    masks.set(i % 2 ? [0xff, 0xff, 0xff, 0x7f, 0, 0] : [0, 0, 0, 0x80, 0, 0], (2 * n + i) * 6);
    // the paired split's extremes: low 34 bits -2^33 with high part 1 or 2^10 (a = 2^33, 2^44 - 2^33)
    masks.set(i % 3 ? [0, 0, 0, 0, 0x02, 0] : [0, 0, 0, 0, 0xfe, 0x0f], (3 * n + i) * 6);
  }
  const m = Int32Array.from({ length: nPolys * n }, () => randomInt(-(2 ** 15), 2 ** 15));
  const rnd = new Uint8Array(nPolys * n * 4.25);
  for (const s of [new Int8Array(n).fill(1), new Int8Array(n).fill(-1), randomTernary(n)]) {
    k.loadSecret(s, s);
    for (let i = 0; i < rnd.length; i++) rnd[i] = randomInt(256);
    for (const shifts of [{ delta: 16, up: 4, outBytes: 5 }, { delta: 20, up: 1, outBytes: 8 }]) {
      const fft = encryptOnce(k, nPolys, masks, m, rnd, shifts, false);
      const ntt = encryptOnce(k, nPolys, masks, m, rnd, shifts, true);
      const single = encryptOnce(k, nPolys, masks, m, rnd, shifts, false, false);
      assert.deepEqual(fft, ntt, `upShift ${shifts.up}: paired FFT products vs NTT`);
      assert.deepEqual(single, ntt, `upShift ${shifts.up}: one polynomial at a time vs NTT`);
    }
  }
  // int8 and int16 messages are widened in the kernel: the same upload as from int32
  const m8 = Int8Array.from({ length: nPolys * n }, () => randomInt(-128, 128));
  const shifts = { delta: 16, up: 4, outBytes: 5 };
  const want = encryptOnce(k, nPolys, masks, Int32Array.from(m8), rnd, shifts, false);
  assert.deepEqual(encryptOnce(k, nPolys, masks, m8, rnd, shifts, false), want, 'int8 messages');
  assert.deepEqual(encryptOnce(k, nPolys, masks, Int16Array.from(m8), rnd, shifts, false), want, 'int16 messages');
  const m16 = Int16Array.from({ length: nPolys * n }, () => randomInt(-(2 ** 15), 2 ** 15));
  assert.deepEqual(encryptOnce(k, nPolys, masks, m16, rnd, shifts, false), encryptOnce(k, nPolys, masks, Int32Array.from(m16), rnd, shifts, false), 'int16 range');
});

test('encryption kernel: noise e = +-#{k : u >= cdt[k]} for draws at every threshold edge (both product paths)', () => {
  const n = 2048;
  const k = new ClientCryptoKernel(n);
  const s = randomTernary(n);
  k.loadSecret(s, s);
  const cdt = Uint32Array.from([1, 5000, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 4e9, 2 ** 32 - 1]);
  k.loadNoiseTable(cdt);
  const draws = new Uint32Array(n);
  const edges = [0, 2 ** 32 - 1, ...Array.from(cdt, (t) => [t - 1, t, t + 1]).flat()].map((x) => Math.min(2 ** 32 - 1, Math.max(0, x)));
  for (let i = 0; i < n; i++) draws[i] = i < edges.length ? edges[i] : randomInt(2 ** 32 - 1) + (i & 1);
  const signs = Uint8Array.from({ length: n / 4 }, () => randomInt(16));
  const want = Array.from(draws, (u, i) => {
    const mag = cdt.reduce((c, t) => c + (u >= t ? 1 : 0), 0);
    return (signs[i >> 2] >> (i & 3)) & 1 && mag > 0 ? -mag : mag;
  });
  // a = 0, m = 1, deltaShift = 8, upShift = 1: out = (256 + e + tie) >> 1, so the two tie values
  // give floor(x/2) + floor((x+1)/2) = x = 256 + e.
  const zeros = new Uint8Array(n * 6);
  const m = new Int32Array(n).fill(1);
  for (const exactNtt of [false, true]) {
    const outs = [0, 0xf0].map((tie) => {
      const rnd = new Uint8Array(n * 4.25);
      new Uint32Array(rnd.buffer, 0, n).set(draws);
      for (let j = 0; j < n / 4; j++) rnd[n * 4 + j] = signs[j] | tie;
      const out = encryptOnce(k, 1, zeros, m, rnd, { delta: 8, up: 1, outBytes: 8 }, exactNtt);
      return new BigUint64Array(out.buffer);
    });
    const got = Array.from({ length: n }, (_, i) => Number(outs[0][i] + outs[1][i]) - 256);
    assert.deepEqual(got, want, exactNtt ? 'NTT path' : 'FFT path');
  }
});

test('kernel refuses a non-ternary secret and a bad ring degree', () => {
  assert.throws(() => new ClientCryptoKernel(1000), /power of two/);
  const k = new ClientCryptoKernel(16);
  const s = new Int8Array(16);
  s[3] = 2;
  assert.throws(() => k.loadSecret(s, s), /not ternary/);
});
