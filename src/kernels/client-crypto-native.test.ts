// The client crypto's native hot loops (src/kernels/native/client-crypto.c) against their
// WebAssembly twins, at every CPU level this machine runs: encryption (paired and single FFT
// products, int8/int16/int32 messages, every upload width), decryption (with accumulation) and the
// transpose must give the same bits on random and extreme inputs. Also: the kernel follows the
// HELORA_KERNELS choice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { ClientCryptoKernel, type MessageArray, type MessageType } from './client-crypto.js';
import { loadNativeKernels, nativeKernels, type NativeKernels } from './native.js';

const loaded = loadNativeKernels();
const levels = loaded.kernels ? loaded.kernels.levels() : [];

/** A NativeKernels object of its own at one level (the thread's shared one keeps its level). */
function atLevel(level: string): NativeKernels {
  const k = loadNativeKernels().kernels!;
  k.setLevel(level);
  return k;
}

function ternary(n: number, fill?: number): Int8Array {
  return Int8Array.from({ length: n }, () => fill ?? randomInt(3) - 1);
}

/** Masks with the splits' extremes in the first polynomials, random bytes elsewhere. */
function masks(nPolys: number, n: number): Uint8Array {
  const a = randomBytes(nPolys * n * 6);
  if (nPolys >= 4) {
    a.fill(0xff, 0, n * 6); // 2^48 - 1: low word -1, high 12 bits all ones (top 4 bits ignored)
    for (let i = 0; i < n; i++) {
      a.set([0, 0, 0, 0x80, 0xff, 0x0f], (n + i) * 6); // low word -2^31, high part 2^12 - 1
      a.set(i % 2 ? [0xff, 0xff, 0xff, 0x7f, 0, 0] : [0, 0, 0, 0x80, 0, 0], (2 * n + i) * 6);
      a.set(i % 3 ? [0, 0, 0, 0, 0x02, 0] : [0, 0, 0, 0, 0xfe, 0x0f], (3 * n + i) * 6); // the paired split's carries
    }
  }
  return a;
}

function encryptWith(k: ClientCryptoKernel, nPolys: number, a: Uint8Array, m: MessageArray, rnd: Uint8Array,
  s: { delta: number; up: number; outBytes: number; lim: number }, pairs: boolean): { ok: boolean; out: Uint8Array; noise: Uint8Array } {
  const v = k.beginEncrypt(nPolys, s.outBytes, m.constructor as MessageType<MessageArray>);
  v.a.set(a); v.m.set(m); v.rnd.set(rnd);
  const ok = k.encrypt(s.delta, s.up, s.lim, { pairs });
  return { ok, out: Uint8Array.from(v.out), noise: Uint8Array.from(v.rnd) };
}

function firstDiff(a: Uint8Array | Int32Array, b: Uint8Array | Int32Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

test('native client crypto is built wherever the native kernels are', () => {
  if (!loaded.kernels) return; // WebAssembly only (native.test.ts requires the build where a compiler exists)
  assert.ok(levels.includes('scalar'));
});

for (const level of levels) {
  for (const n of [16, 64, 2048, 4096]) {
    test(`native encryption = WebAssembly bit for bit, level ${level}, N = ${n} (pairs and single, int8/int16/int32, upload widths)`, () => {
      const wasm = new ClientCryptoKernel(n, 'client-crypto', null);
      const nat = new ClientCryptoKernel(n, 'client-crypto', atLevel(level));
      const nPolys = n <= 64 ? 7 : 5; // odd: the pairs leave one polynomial alone
      const cdts = [Uint32Array.from({ length: 19 }, (_, i) => Math.min(2 ** 32 - 1, Math.round(2 ** 31 * (1 - Math.exp(-(i + 1) / 4))))),
        Uint32Array.from([0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1])];
      for (const s of [ternary(n), ternary(n, 1), ternary(n, -1)]) {
        for (const k of [wasm, nat]) k.loadSecret(s, s);
        for (const cdt of cdts) {
          for (const k of [wasm, nat]) k.loadNoiseTable(cdt);
          const a = masks(nPolys, n);
          const rnd = randomBytes(nPolys * n * 4.25);
          if (cdt.length < 19) for (let i = 0; i < nPolys * n; i++) rnd.writeUInt32LE(cdt[randomInt(cdt.length)]! + randomInt(-1, 2) >>> 0, 4 * i);
          const msgs: MessageArray[] = [
            Int8Array.from({ length: nPolys * n }, (_, i) => (i % 7 === 0 ? -128 : i % 11 === 0 ? 127 : randomInt(-128, 128))),
            Int16Array.from({ length: nPolys * n }, () => randomInt(-(2 ** 15), 2 ** 15)),
            Int32Array.from({ length: nPolys * n }, (_, i) => (i % 5 === 0 ? -(2 ** 20) : randomInt(-(2 ** 20), 2 ** 20))),
          ];
          for (const m of msgs) {
            for (const sh of [{ delta: 16, up: 4, outBytes: 5, lim: 2 ** 20 + 1 }, { delta: 20, up: 1, outBytes: 8, lim: 2 ** 21 }, { delta: 12, up: 12, outBytes: 4, lim: 2 ** 20 + 1 },
              { delta: 16, up: 4, outBytes: 5, lim: 100 }]) { // the last: out-of-range messages are reported by both
              for (const pairs of [true, false]) {
                const w = encryptWith(wasm, nPolys, a, m, rnd, sh, pairs);
                const x = encryptWith(nat, nPolys, a, m, rnd, sh, pairs);
                const what = `${m.constructor.name}, ${JSON.stringify(sh)}, pairs ${pairs}`;
                assert.equal(x.ok, w.ok, `${what}: message check`);
                assert.equal(firstDiff(x.out, w.out), -1, `${what}: upload differs at byte ${firstDiff(x.out, w.out)}`);
                assert.equal(firstDiff(x.noise, w.noise), -1, `${what}: sampled noise differs`);
              }
            }
          }
        }
      }
    });

    test(`native decryption and transpose = WebAssembly bit for bit, level ${level}, N = ${n} (random and extreme a, b; accumulate)`, () => {
      const wasm = new ClientCryptoKernel(n, 'client-crypto', null);
      const nat = new ClientCryptoKernel(n, 'client-crypto', atLevel(level));
      for (const [rows, s] of [[7, ternary(n)], [8, ternary(n)], [7, ternary(n, 1)], [8, ternary(n, -1)]] as const) { // 8: the 4 x 4 register blocks
        for (const k of [wasm, nat]) k.loadSecret(s, s);
        const parts = [
          () => Uint32Array.from({ length: rows * n }, () => randomInt(2 ** 32 - 1)),
          () => new Uint32Array(rows * n).fill(2 ** 32 - 1),
          () => new Uint32Array(rows * n).fill(2 ** 31),
        ];
        for (const sh of [1, 4, 12, 31]) {
          const terms = parts.map((make) => ({ a: make(), b: parts[randomInt(parts.length)]!() }));
          const run = (k: ClientCryptoKernel): { y: Int32Array; yT: Int32Array } => {
            const v = k.beginDecrypt(rows);
            terms.forEach(({ a, b }, term) => {
              v.a.set(a); v.b.set(b);
              k.decrypt(sh, { accumulate: term > 0 });
            });
            k.transpose();
            return { y: Int32Array.from(v.y), yT: Int32Array.from(v.yT) };
          };
          const w = run(wasm), x = run(nat);
          assert.equal(firstDiff(x.y, w.y), -1, `sh ${sh}: y differs at ${firstDiff(x.y, w.y)}`);
          assert.equal(firstDiff(x.yT, w.yT), -1, `sh ${sh}: transpose differs`);
          // The pool workers' path: a, b read in place (decryptFrom), the first tn tokens into a
          // slice of a larger token-major result (transposeInto), int32 or f64.
          const total = rows + 3, r0 = 2, t0 = 1, tn = n - 3;
          for (const Acc of [Int32Array, Float64Array]) {
            const into = (k: ClientCryptoKernel): Int32Array | Float64Array => {
              const acc = new Acc((t0 + tn + 1) * total).fill(7);
              k.beginDecrypt(rows);
              terms.forEach(({ a, b }, term) => k.decryptFrom(a, b, sh, { accumulate: term > 0 }));
              k.transposeInto(acc, total, r0, t0, tn);
              return acc;
            };
            const wi = into(wasm), xi = into(nat);
            assert.deepEqual(xi, wi, `sh ${sh}: decryptFrom + transposeInto (${Acc.name})`);
            for (let t = 0; t < tn; t++) for (let r = 0; r < rows; r++) assert.equal(xi[(t0 + t) * total + r0 + r], w.y[r * n + t]);
            assert.equal(xi[0], 7, 'outside the target range untouched');
          }
        }
      }
    });
  }
}

test('the client kernel runs the backend HELORA_KERNELS selects (native twins only when native is chosen)', () => {
  const k = new ClientCryptoKernel(64);
  const want = nativeKernels();
  assert.equal(k.native === null, want === null);
  if (process.env.HELORA_KERNELS === 'wasm') assert.equal(k.native, null);
});
