import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { fftDecryptErrorBound, NttKernel, negacyclicMulRef, NTT_PRIMES } from './ntt.js';

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
    const k = new NttKernel(n);
    const s = randomTernary(n);
    k.loadSecret(s, s);
    const a = random44(n);
    assertSame(k.productExact44(a), negacyclicMulRef(toBig(a), toBig(s)), 'random');
  });
}

test('NTT product at the extremes: a = 2^44 - 1 everywhere, s = all +1 / all -1 / single -1', () => {
  const n = 2048;
  const k = new NttKernel(n);
  const a = new Array<number>(n).fill(2 ** 44 - 1);
  for (const fill of [1, -1]) {
    const s = new Int8Array(n).fill(fill);
    k.loadSecret(s, s);
    assertSame(k.productExact44(a), negacyclicMulRef(toBig(a), toBig(s)), `s = ${fill}`);
  }
  const s = new Int8Array(n);
  s[n - 1] = -1;
  k.loadSecret(s, s);
  const a2 = random44(n);
  assertSame(k.productExact44(a2), negacyclicMulRef(toBig(a2), toBig(s)), 'X^(N-1) rotation');
  // residues equal to p - 1 and p hit the lazy-reduction edges
  const a3 = Array.from({ length: n }, (_, i) => [NTT_PRIMES[0] - 1, NTT_PRIMES[1], 0, 2 ** 32 - 1, 2 ** 32][i % 5]);
  const s3 = randomTernary(n);
  k.loadSecret(s3, s3);
  assertSame(k.productExact44(a3), negacyclicMulRef(toBig(a3), toBig(s3)), 'edge residues');
});

test('NTT product for 32-bit a (decryption path), random and all 2^32 - 1', () => {
  const n = 1024;
  const k = new NttKernel(n);
  const s = randomTernary(n);
  k.loadSecret(s, s);
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = randomInt(2 ** 32 - 1) + (i & 1);
  assertSame(k.productExact32(a), negacyclicMulRef(toBig(a), toBig(s)), 'random u32');
  const full = new Uint32Array(n).fill(0xffffffff);
  const ones = new Int8Array(n).fill(1);
  k.loadSecret(ones, ones);
  assertSame(k.productExact32(full), negacyclicMulRef(toBig(full), toBig(ones)), 'all ones');
});

for (const n of [16, 64, 256]) {
  test(`decrypt kernel (FFT): y = round((b - a*s mod 2^32) / 2^sh), centered, equals the schoolbook, N = ${n}`, () => {
    const k = new NttKernel(n);
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

/** The exact a*s for int32 a (read signed) as numbers (|a*s| < 2^43: exact in doubles). */
function exactSigned(k: NttKernel, a: Int32Array): number[] {
  const unsigned = k.productExact32(new Uint32Array(a.buffer, a.byteOffset, a.length));
  const negative = k.productExact32(Uint32Array.from(a, (x) => (x < 0 ? 1 : 0)));
  return Array.from(unsigned, (u, i) => Number(u - (negative[i] << 32n)));
}

for (const n of [2048, 4096]) {
  test(`decryption FFT: measured error of a*s stays below the documented bound, itself below 1/2 (worst-case magnitudes), N = ${n}`, () => {
    const k = new NttKernel(n);
    let worst = 0;
    const secrets = [new Int8Array(n).fill(1), new Int8Array(n).fill(-1), randomTernary(n)];
    for (const s of secrets) {
      k.loadSecret(s, s);
      const operands = [new Int32Array(n).fill(-(2 ** 31)), new Int32Array(n).fill(2 ** 31 - 1),
        Int32Array.from({ length: n }, (_, i) => (i % 2 ? 2 ** 31 - 1 : -(2 ** 31))),
        ...Array.from({ length: 4 }, () => Int32Array.from({ length: n }, () => randomInt(2 ** 32 - 1) | 0))];
      for (const a of operands) {
        const raw = k.productFftRaw(a);
        const want = exactSigned(k, a);
        for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(raw[i] - want[i]));
      }
    }
    const bound = fftDecryptErrorBound(n);
    assert.ok(bound < 0.5, `bound ${bound} must stay below 1/2 for exact rounding`);
    assert.ok(worst < bound, `max FFT error ${worst} >= the documented bound ${bound}`);
    assert.ok(worst > 0, 'the FFT is floating point: some rounding error must show');
  });
}

test('decrypt kernel at N = 2048: the FFT equals the exact NTT decryption; accumulate sums terms; transpose is token-major', () => {
  const n = 2048;
  const k = new NttKernel(n);
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

test('kernel refuses a non-ternary secret and a bad ring degree', () => {
  assert.throws(() => new NttKernel(1000), /power of two/);
  const k = new NttKernel(16);
  const s = new Int8Array(16);
  s[3] = 2;
  assert.throws(() => k.loadSecret(s, s), /not ternary/);
});
