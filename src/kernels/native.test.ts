// The native kernels (build/native/helora.node) at every CPU level this machine runs, against
// their WebAssembly twins (KernelEngine, called directly whatever HELORA_KERNELS says) and the
// plain-TS references. Integer kernels must be bit-identical; fp32 within a tight tolerance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { KernelEngine } from './engine.js';
import { gemmInt8Reference } from './gemm-int8.js';
import { gemmF32Reference } from './gemm-f32.js';
import { matmulBackwardInputReference, matmulBackwardWeightReference, matmulForwardReference } from './matmul-f32.js';
import { kernelBackend, loadNativeKernels, type NativeKernels } from './native.js';
import { KernelPool } from './pool.js';
import { ZqWeights, zqMatmul, zqMatmulReference } from './zq-matmul.js';
import { randBytes, randW, TEST_MODULUS } from './test-data.js';

function hasCompiler(): boolean {
  for (const cc of [process.env.CC, 'cc', 'gcc', 'clang'].filter((c): c is string => !!c)) {
    try {
      execFileSync(cc, ['--version'], { stdio: 'ignore' });
      return true;
    } catch { /* next */ }
  }
  return false;
}

const loaded = loadNativeKernels();
const nk: NativeKernels | null = loaded.kernels;
const levels = nk ? nk.levels() : [];
const wasm = new KernelEngine();

test('the native kernels are built and loaded wherever a C compiler exists', () => {
  if (!hasCompiler()) return; // nothing could build them: the WebAssembly kernels run (tested everywhere)
  assert.ok(nk, `native kernels missing although a C compiler exists: ${loaded.error}`);
  assert.ok(levels.includes('scalar'), `levels ${levels.join(', ')}`);
  if (process.arch === 'x64') assert.ok(levels.length >= 2, `an x86-64 build should offer a vector level, got ${levels.join(', ')}`);
  if (process.arch === 'arm64') assert.ok(levels.includes('neon'), `an arm64 build should offer neon, got ${levels.join(', ')}`);
});

test('the wrappers run the backend HELORA_KERNELS selects', () => {
  const want = process.env.HELORA_KERNELS === 'wasm' || !nk ? 'wasm' : 'native';
  assert.equal(kernelBackend().backend, want);
});

/** Runs `nativeKernels()` in a fresh process with the given environment; its stderr and exit code. */
function selectIn(env: Record<string, string>): { status: number | null; stderr: string } {
  const url = new URL('./native.js', import.meta.url).href;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(url)}); m.nativeKernels();`], {
    env: { ...process.env, ...env }, encoding: 'utf8',
  });
  return { status: r.status, stderr: r.stderr };
}

test('HELORA_KERNELS: one log line names the backend and level; a bad value or level is a clear error', () => {
  const wasmRun = selectIn({ HELORA_KERNELS: 'wasm' });
  assert.equal(wasmRun.status, 0, wasmRun.stderr);
  assert.match(wasmRun.stderr, /^helora: kernels: WebAssembly SIMD \(HELORA_KERNELS=wasm\)\n$/);
  const bad = selectIn({ HELORA_KERNELS: 'cuda' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /HELORA_KERNELS must be wasm or native, got cuda/);
  if (!nk) return;
  const scalar = selectIn({ HELORA_KERNELS: 'native', HELORA_NATIVE_LEVEL: 'scalar' });
  assert.equal(scalar.status, 0, scalar.stderr);
  assert.match(scalar.stderr, /^helora: kernels: native scalar \(.*\), fp32 work on \d+ threads?\n$/);
  const one = selectIn({ HELORA_KERNELS: 'native', HELORA_THREADS: '1' });
  assert.equal(one.status, 0, one.stderr);
  assert.match(one.stderr, /, fp32 work on 1 thread\n$/);
  const badThreads = selectIn({ HELORA_THREADS: 'lots' });
  assert.notEqual(badThreads.status, 0);
  assert.match(badThreads.stderr, /HELORA_THREADS must be an integer in \[1, 256\], got lots/);
  const badLevel = selectIn({ HELORA_KERNELS: 'native', HELORA_NATIVE_LEVEL: 'avx9000' });
  assert.notEqual(badLevel.status, 0);
  assert.match(badLevel.stderr, /HELORA_KERNELS=native but the native kernels are unavailable: .*level avx9000 is not supported/);
});

/** Runs fn at every level (restoring the best one); with no native build there is nothing to run. */
function eachLevel(fn: (k: NativeKernels, level: string) => void): void {
  if (!nk) return;
  try {
    for (const lv of levels) {
      nk.setLevel(lv);
      fn(nk, lv);
    }
  } finally {
    nk.setLevel(levels[0]!);
  }
}

function mismatches(x: ArrayLike<number>, y: ArrayLike<number>): number {
  assert.equal(x.length, y.length);
  let bad = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) bad++;
  return bad;
}

// ---- the encrypted product ----

interface ZqCase { w: Int8Array; rows: number; cols: number; a: Uint8Array; b: Uint8Array; N: number; label: string }

function zqWasm(c: ZqCase): { aOut: Uint32Array; bOut: Uint32Array } {
  wasm.heap.resetScratch();
  const aOut = new Uint32Array(c.rows * c.N), bOut = new Uint32Array(c.rows * c.N);
  wasm.zqPacked(wasm.packInt8(c.w, c.rows, c.cols, false), c.rows, c.cols, c.a, c.b, c.N, aOut, bOut);
  return { aOut, bOut };
}

/** Native (both parts, a alone, b alone) == WebAssembly, and == the reference when asked. */
function checkZq(c: ZqCase, withReference: boolean): void {
  const want = zqWasm(c);
  if (withReference) {
    const ar = new Uint32Array(c.rows * c.N), br = new Uint32Array(c.rows * c.N);
    zqMatmulReference(TEST_MODULUS, c.w, c.rows, c.cols, c.a, c.b, c.N, ar, br);
    assert.equal(mismatches(want.aOut, ar) + mismatches(want.bOut, br), 0, `wasm vs reference, ${c.label}`);
  }
  eachLevel((k, lv) => {
    const packed = k.packI8(c.w, c.rows, c.cols);
    const aOut = new Uint32Array(c.rows * c.N), bOut = new Uint32Array(c.rows * c.N);
    k.zq(packed, c.rows, c.cols, c.a, c.b, c.N, aOut, bOut);
    assert.equal(mismatches(aOut, want.aOut), 0, `${lv} a part, ${c.label}`);
    assert.equal(mismatches(bOut, want.bOut), 0, `${lv} b part, ${c.label}`);
    const aOnly = new Uint32Array(c.rows * c.N), bOnly = new Uint32Array(c.rows * c.N);
    k.zqA(packed, c.rows, c.cols, c.a, c.N, aOnly);
    k.zqB(packed, c.rows, c.cols, c.b, c.N, bOnly);
    assert.equal(mismatches(aOnly, want.aOut), 0, `${lv} a part alone, ${c.label}`);
    assert.equal(mismatches(bOnly, want.bOut), 0, `${lv} b part alone, ${c.label}`);
  });
}

function randomCase(rows: number, cols: number, N: number): ZqCase {
  return { w: randW(rows * cols), rows, cols, a: randBytes(cols * N * 6), b: randBytes(cols * N * 5), N, label: `${rows}x${cols} N=${N}` };
}

test('native packing is the WebAssembly layout of ZqWeights', () => {
  if (!nk) return;
  for (const [rows, cols] of [[1, 1], [5, 7], [13, 64], [4, 33]] as const) {
    const w = randW(rows * cols);
    assert.deepEqual(nk.packI8(w, rows, cols), ZqWeights.pack(w, rows, cols).packed, `${rows}x${cols}`);
  }
});

test('native zq equals WebAssembly and the reference on random odd shapes, every level', () => {
  for (const [rows, cols, N] of [[1, 1, 8], [13, 37, 16], [3, 20, 24], [7, 100, 64], [5, 33, 72], [6, 9, 136], [2, 5, 2048], [17, 31, 40]] as const) {
    checkZq(randomCase(rows, cols, N), true);
  }
});

test('native zq at cols = 8192 (one chunk), beyond (K-chunk terms) and K = 16384, every level', () => {
  for (const [rows, cols, N] of [[3, 8192, 8], [2, 8193, 8], [5, 16384, 16], [3, 16390, 8]] as const) {
    checkZq(randomCase(rows, cols, N), rows * cols * N <= 300_000);
  }
});

test('native zq is exact at the limb extremes, every level', () => {
  for (const cols of [8192, 8300, 16384]) {
    const rows = 4, N = 8;
    // Low 12 bits 0x800: the balanced lowest a limb is -2048 everywhere (0x80: the lowest b limb -128).
    const a = new Uint8Array(cols * N * 6), b = new Uint8Array(cols * N * 5);
    for (let j = 0; j < cols * N; j++) {
      a.set([0x00, 0xf8, 0xff, 0xff, 0xff, 0xff], j * 6);
      b.set([0x80, 0x80, 0xff, 0x7f, 0xff], j * 5);
    }
    const ones6 = new Uint8Array(cols * N * 6).fill(0xff), ones5 = new Uint8Array(cols * N * 5).fill(0xff);
    const mixed = new Int8Array(rows * cols);
    for (let i = 0; i < mixed.length; i++) mixed[i] = i % 3 === 0 ? -127 : 127;
    for (const [wl, w] of [['+127', new Int8Array(rows * cols).fill(127)], ['-127', new Int8Array(rows * cols).fill(-127)], ['mixed', mixed]] as const) {
      checkZq({ w, rows, cols, a, b, N, label: `extreme limbs, W ${wl}, cols ${cols}` }, cols === 8192);
      checkZq({ w, rows, cols, a: ones6, b: ones5, N, label: `all-ones bytes, W ${wl}, cols ${cols}` }, cols === 8192);
    }
  }
});

test('zqMatmul (the wrapper, either backend) equals the reference', () => {
  const c = randomCase(9, 300, 24);
  const ao = new Uint32Array(c.rows * c.N), bo = new Uint32Array(c.rows * c.N), ar = new Uint32Array(c.rows * c.N), br = new Uint32Array(c.rows * c.N);
  zqMatmul(TEST_MODULUS, ZqWeights.pack(c.w, c.rows, c.cols), c.a, c.b, c.N, ao, bo);
  zqMatmulReference(TEST_MODULUS, c.w, c.rows, c.cols, c.a, c.b, c.N, ar, br);
  assert.equal(mismatches(ao, ar) + mismatches(bo, br), 0);
});

test('the pool computes either part of the encrypted product alone (either backend)', async () => {
  const pool = await KernelPool.create(2);
  try {
    const c = randomCase(10, 70, 16);
    const h = await pool.registerZq(c.w, c.rows, c.cols);
    const full = await pool.zqMatmul(TEST_MODULUS, h, c.a, c.b, c.N);
    assert.deepEqual(await pool.zqMatmulPart(TEST_MODULUS, h, 'a', c.a, c.N), full.aOut);
    assert.deepEqual(await pool.zqMatmulPart(TEST_MODULUS, h, 'b', c.b, c.N), full.bOut);
    const ar = new Uint32Array(c.rows * c.N), br = new Uint32Array(c.rows * c.N);
    zqMatmulReference(TEST_MODULUS, c.w, c.rows, c.cols, c.a, c.b, c.N, ar, br);
    assert.deepEqual(full.aOut, ar);
    assert.deepEqual(full.bOut, br);
    await assert.rejects(pool.zqMatmulPart(TEST_MODULUS, h, 'b', c.a, c.N), /expected cols\*N\*5/);
  } finally {
    await pool.close();
  }
});

// ---- int8 GEMM ----

function randInt8(n: number): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(Math.random() * 256) - 128;
  return a;
}

test('native int8 GEMM is bit-identical to WebAssembly and the reference, every level, 1 and 3 threads', () => {
  const cases: [Int8Array, Int8Array, number, number, number, string][] = [];
  // (37 x 1027 x 300 is above the threading threshold and splits into unequal row ranges)
  for (const [M, K, N] of [[1, 1, 1], [13, 37, 19], [4, 8, 8], [33, 130, 41], [5, 2051, 9], [70, 3, 130], [3, 16384, 17], [9, 64, 1], [37, 1027, 300]] as const) {
    cases.push([randInt8(M * K), randInt8(K * N), M, K, N, `random ${M}x${K}x${N}`]);
  }
  for (const [wv, xv] of [[-128, -128], [127, -128], [-127, 127]] as const) {
    const M = 6, K = 16384, N = 18;
    cases.push([new Int8Array(M * K).fill(wv), new Int8Array(K * N).fill(xv), M, K, N, `extreme ${wv} x ${xv}, K ${K}`]);
  }
  for (const [w, x, M, K, N, label] of cases) {
    wasm.heap.resetScratch();
    const want = wasm.gemmInt8Packed(wasm.packInt8(w, M, K, false), M, K, x, N);
    assert.equal(mismatches(want, gemmInt8Reference(w, x, M, K, N)), 0, `wasm vs reference, ${label}`);
    eachLevel((k, lv) => {
      const threads = k.threads;
      try {
        for (const t of [1, 3]) {
          k.threads = t;
          assert.equal(mismatches(k.gemmI8(k.packI8(w, M, K), M, K, x, N), want), 0, `${lv}, ${t} threads, ${label}`);
        }
      } finally {
        k.threads = threads;
      }
    });
  }
});

// ---- fp32 GEMM ----

function randF32(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/** |x - y| <= tol * (sqrt(K) * scale) elementwise: float32 sums of K unit-size terms in another order. */
function assertClose(x: Float32Array, y: ArrayLike<number>, K: number, label: string): void {
  assert.equal(x.length, y.length, label);
  const tol = 2e-6 * Math.sqrt(Math.max(K, 1)) * 4;
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / Math.max(1, Math.abs(y[i]!)));
  assert.ok(worst <= tol, `${label}: worst error ${worst} > ${tol}`);
}

test('native sgemm matches the double-precision reference and WebAssembly, every level', () => {
  for (const [M, K, N] of [[1, 1, 1], [6, 16, 16], [13, 37, 19], [12, 256, 32], [33, 300, 41], [7, 513, 70], [100, 70, 2100], [2, 1025, 3]] as const) {
    const w = randF32(M * K), x = randF32(K * N);
    const ref = gemmF32Reference(w, x, M, K, N);
    wasm.heap.resetScratch();
    const ap = wasm.packF32A({ data: w, offset: 0, si: K, sj: 1 }, M, K, false);
    const bp = wasm.packF32B({ data: x, offset: 0, si: N, sj: 1 }, K, N, false);
    const viaWasm = new Float32Array(M * N);
    wasm.gemmF32Packed(ap, bp, M, K, N, { data: viaWasm, offset: 0, si: N, sj: 1 }, false, null);
    eachLevel((k, lv) => {
      const out = new Float32Array(M * N);
      k.sgemm(M, N, K, { data: w, offset: 0, si: K, sj: 1 }, { data: x, offset: 0, si: N, sj: 1 }, { data: out, offset: 0, si: N, sj: 1 }, false, null);
      assertClose(out, ref, K, `${lv} ${M}x${K}x${N} vs reference`);
      assertClose(out, viaWasm, K, `${lv} ${M}x${K}x${N} vs WebAssembly`);
    });
  }
});

test('native sgemm in the three llm.c matmul forms (strided, bias, accumulate, K = 0), every level', () => {
  for (const [T, C, OC] of [[1, 5, 3], [8, 64, 96], [9, 33, 17], [70, 130, 50], [20, 0, 7]] as const) {
    const inp = randF32(T * C), w = randF32(OC * C), bias = randF32(OC), dout = randF32(T * OC);
    const fwdRef = new Float32Array(T * OC);
    matmulForwardReference(fwdRef, inp, w, bias, T, C, OC);
    const dinp0 = randF32(T * C), dw0 = randF32(OC * C);
    const dinpRef = dinp0.slice(), dwRef = dw0.slice();
    matmulBackwardInputReference(dinpRef, dout, w, T, C, OC);
    matmulBackwardWeightReference(dwRef, dout, inp, T, C, OC);
    eachLevel((k, lv) => {
      const label = `${lv} T=${T} C=${C} OC=${OC}`;
      const out = new Float32Array(T * OC).fill(NaN);
      k.sgemm(T, OC, C, { data: inp, offset: 0, si: C, sj: 1 }, { data: w, offset: 0, si: 1, sj: C }, { data: out, offset: 0, si: OC, sj: 1 }, false, bias);
      assertClose(out, fwdRef, C, `forward ${label}`);
      // The few-token path (weights read in place) computes the same three products.
      const outSmall = new Float32Array(T * OC).fill(NaN);
      k.smallMatmul('fwd', outSmall, inp, w, bias, T, C, OC);
      assertClose(outSmall, fwdRef, C, `small forward ${label}`);
      const dinpSmall = dinp0.slice(), dwSmall = dw0.slice();
      k.smallMatmul('bwdIn', dinpSmall, dout, w, null, T, C, OC);
      k.smallMatmul('bwdW', dwSmall, dout, inp, null, T, C, OC);
      assertClose(dinpSmall, dinpRef, OC, `small backward input ${label}`);
      assertClose(dwSmall, dwRef, T, `small backward weight ${label}`);
      if (C === 0) return;
      const dinp = dinp0.slice(), dw = dw0.slice();
      k.sgemm(T, C, OC, { data: dout, offset: 0, si: OC, sj: 1 }, { data: w, offset: 0, si: C, sj: 1 }, { data: dinp, offset: 0, si: C, sj: 1 }, true, null);
      k.sgemm(OC, C, T, { data: dout, offset: 0, si: 1, sj: OC }, { data: inp, offset: 0, si: C, sj: 1 }, { data: dw, offset: 0, si: C, sj: 1 }, true, null);
      assertClose(dinp, dinpRef, OC, `backward input ${label}`);
      assertClose(dw, dwRef, T, `backward weight ${label}`);
      // A transposed output with an offset (the pool's forward shard layout) touches nothing else.
      const big = new Float32Array(5 + T * OC + 3).fill(7);
      k.sgemm(OC, T, C, { data: w, offset: 0, si: C, sj: 1 }, { data: inp, offset: 0, si: 1, sj: C }, { data: big, offset: 5, si: 1, sj: OC }, false, null);
      assert.deepEqual([...big.subarray(0, 5), ...big.subarray(5 + T * OC)], new Array(8).fill(7), label);
      const noBias = new Float32Array(T * OC);
      matmulForwardReference(noBias, inp, w, null, T, C, OC);
      assertClose(big.subarray(5, 5 + T * OC), noBias, C, `transposed ${label}`);
    });
  }
});

// ---- memory safety and the peak loop ----

test('the native addon refuses sizes that would reach outside the arrays', () => {
  if (!nk) return;
  const packed = nk.packI8(randW(6), 2, 3);
  const a = new Uint8Array(3 * 8 * 6), b = new Uint8Array(3 * 8 * 5);
  assert.throws(() => nk.zq(packed, 2, 3, a, b, 8, new Uint32Array(15), new Uint32Array(16)), /aOut has 15 elements/);
  assert.throws(() => nk.zq(packed, 2, 3, a.subarray(1), b, 8, new Uint32Array(16), new Uint32Array(16)), /a has/);
  assert.throws(() => nk.zq(packed, 5, 3, a, b, 8, new Uint32Array(40), new Uint32Array(40)), /packed weights has/);
  assert.throws(() => nk.zq(packed, 2, 3, a, b, 12, new Uint32Array(24), new Uint32Array(24)), /multiple of 8/);
  assert.throws(() => nk.zq(packed, 2, 3, a, null, 8, null, new Uint32Array(16)), /a with aOut/);
  assert.throws(() => nk.gemmI8(packed, 2, 3, new Int8Array(3 * 4 - 1), 4), /x has/);
  assert.throws(() => nk.gemmI8(packed, 2, 3, new Int8Array(12), 4, new Int32Array(7)), /out has/);
  assert.throws(() => nk.gemmI8(packed, 2.5, 3, new Int8Array(12), 4), /M must be an integer/);
  const f = new Float32Array(12);
  const v = (si: number, sj: number, offset = 0) => ({ data: f, offset, si, sj });
  assert.throws(() => nk.sgemm(3, 4, 1, v(1, 0), v(0, 1), v(4, 1, 1), false, null), /C has 12 elements, expected at least 13/);
  assert.throws(() => nk.sgemm(3, 4, 2, v(2, 1, 7), v(4, 1), v(4, 1), false, null), /A has/);
  assert.throws(() => nk.sgemm(3, 4, 1, v(1, 0), v(0, 1), v(4, 1), false, new Float32Array(3)), /bias has/);
  assert.throws(() => nk.sgemm(3, 4, 1, v(-1, 0), v(0, 1), v(4, 1), false, null), /non-negative/);
  assert.throws(() => nk.smallMatmul('fwd', new Float32Array(5), new Float32Array(6), new Float32Array(6), null, 2, 3, 3), /target has 5 elements, expected at least 6/);
  assert.throws(() => nk.smallMatmul('bwdW', new Float32Array(9), new Float32Array(6), new Float32Array(5), null, 2, 3, 3), /y has 5 elements/);
  assert.throws(() => nk.smallMatmul('bwdIn', new Float32Array(6), new Float32Array(6), new Float32Array(9), new Float32Array(3), 2, 3, 3), /only the forward takes a bias/);
  assert.throws(() => nk.setLevel('avx9000'), /not supported/);
});

test('the register-only peak loop runs at every level', () => {
  eachLevel((k, lv) => assert.ok(k.peak(1000) > 0, lv));
});
