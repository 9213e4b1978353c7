// The client's native fp32 model ops (src/kernels/native/model-ops.c) against the JavaScript
// reference bodies of src/model/layers.ts, at every CPU level this machine runs: cross entropy
// (loss and in-place gradient, ignored rows, vocabulary sizes off the vector width, extreme
// logits), SwiGLU forward/backward, and the GEMM split over threads (the same bits as one thread).
// The native ops are exp polynomials in float where the references use Math.exp in double: they
// agree to float rounding, and every thread count gives the same bits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNativeKernels, type NativeKernels } from './native.js';
import { crossEntropyBackward, crossEntropyForward, IGNORE_INDEX, rmsnormBackward, rmsnormForward, swigluBackward, swigluForward } from '../model/layers.js';
import { dropoutMaskReference, loraLinearBackwardReference, loraLinearForwardReference, type LoraPair } from '../model/lora.js';
import { dequantizeBackwardRangeReference, dequantizeForwardRangeReference, prepareBackwardInput, quantizePerToken, quantizeRowsReference, symmetricQmax } from '../quant/quantize.js';
import { seededRandom } from '../train/packing.js';
import { randomBytes } from 'node:crypto';

const loaded = loadNativeKernels();
const levels = loaded.kernels ? loaded.kernels.levels() : [];

function atLevel(level: string, threads: number): NativeKernels {
  const k = loadNativeKernels().kernels!;
  k.setLevel(level);
  k.threads = threads;
  return k;
}

function randomF32(n: number, rnd: () => number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
}

/** Max |a - b| / (1 + |b|) over the arrays. */
function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!)));
  return m;
}

test('native model ops are built wherever the native kernels are', () => {
  if (!loaded.kernels) return; // WebAssembly only (native.test.ts requires the build where a compiler exists)
  assert.equal(typeof loaded.kernels.crossEntropy, 'function');
});

for (const level of levels) {
  test(`native cross entropy = the JavaScript reference to float rounding, level ${level}; threads give the same bits`, () => {
    const rnd = seededRandom(7);
    for (const V of [1, 7, 8, 17, 64, 1000, 49152]) {
      const T = V > 1000 ? 6 : 13;
      const logits = randomF32(T * V, rnd, 8);
      if (V >= 8) { logits[3] = 80; logits[V + 1] = -1e30; logits[2 * V + 2] = 1e4; } // dominant, far-off and huge logits
      const targets = Int32Array.from({ length: T }, (_, t) => (t % 4 === 1 ? IGNORE_INDEX : (t * 7919) % V));
      const denom = 11;
      // The references run in JS on Float64Array copies (the dispatch sends only fp32 to the kernels).
      const ref64 = Float64Array.from(logits);
      const refLosses = new Float64Array(T);
      const refSum = crossEntropyForward(refLosses, ref64, targets, T, V);
      const refGrad = new Float64Array(T * V);
      crossEntropyBackward(refGrad, ref64, targets, T, V, denom);

      const bits: Float32Array[] = [];
      for (const threads of [1, 2, 3]) {
        const k = atLevel(level, threads);
        const losses = new Float64Array(T);
        k.crossEntropy(logits.slice(), targets, T, V, false, 0, losses);
        assert.ok(maxRelDiff(losses, refLosses) < 2e-6, `V = ${V}: losses differ by ${maxRelDiff(losses, refLosses)}`);
        const g = logits.slice();
        const gl = new Float64Array(T);
        k.crossEntropy(g, targets, T, V, true, 1 / denom, gl);
        assert.deepEqual(gl, losses, 'the fused form gives the same losses');
        let maxAbs = 0;
        for (let i = 0; i < g.length; i++) maxAbs = Math.max(maxAbs, Math.abs(g[i]! - refGrad[i]!));
        assert.ok(maxAbs < 1e-7, `V = ${V}: gradients differ by ${maxAbs}`);
        for (let t = 0; t < T; t++) if (targets[t] === IGNORE_INDEX) assert.ok(g.subarray(t * V, (t + 1) * V).every((x) => x === 0));
        bits.push(g);
      }
      assert.deepEqual(bits[1], bits[0]);
      assert.deepEqual(bits[2], bits[0]);
      assert.ok(Math.abs(refSum - refLosses.reduce((a, b) => a + b, 0)) < 1e-9);
    }
  });

  test(`native SwiGLU = the JavaScript reference to float rounding, level ${level}`, () => {
    const rnd = seededRandom(11);
    for (const n of [1, 9, 16384 * 2 + 5]) {
      const gate = randomF32(n, rnd, 12), up = randomF32(n, rnd, 3), dout = randomF32(n, rnd, 1);
      if (n > 8) { gate[0] = 100; gate[1] = -100; gate[2] = 0; gate[3] = -88; gate[4] = 89; }
      const out = new Float64Array(n), dg = new Float64Array(n).fill(0.5), du = new Float64Array(n).fill(-0.25);
      swigluForward(out, Float64Array.from(gate), Float64Array.from(up), n);
      swigluBackward(dg, du, Float64Array.from(dout), Float64Array.from(gate), Float64Array.from(up), n);
      for (const threads of [1, 2]) {
        const k = atLevel(level, threads);
        const o = new Float32Array(n);
        k.swigluForward(o, gate, up, n);
        assert.ok(maxRelDiff(o, out) < 1e-6, `n = ${n}: forward differs by ${maxRelDiff(o, out)}`);
        const g = new Float32Array(n).fill(0.5), u = new Float32Array(n).fill(-0.25);
        k.swigluBackward(g, u, dout, gate, up, n);
        assert.ok(maxRelDiff(g, dg) < 1e-6 && maxRelDiff(u, du) < 1e-6, `n = ${n}: backward differs`);
      }
    }
  });

  test(`native GEMM over threads = one thread bit for bit, level ${level}`, () => {
    const rnd = seededRandom(3);
    for (const [M, N, K] of [[683, 1000, 96], [1000, 65, 300], [97, 2049, 33]] as const) {
      const A = randomF32(M * K, rnd, 1), B = randomF32(K * N, rnd, 1), bias = randomF32(N, rnd, 1);
      const outs: Float32Array[] = [];
      for (const threads of [1, 2, 5]) {
        const k = atLevel(level, threads);
        const C = randomF32(M * N, seededRandom(1), 1);
        k.sgemm(M, N, K, { data: A, offset: 0, si: K, sj: 1 }, { data: B, offset: 0, si: N, sj: 1 }, { data: C, offset: 0, si: N, sj: 1 }, true, bias);
        outs.push(C);
      }
      assert.deepEqual(outs[1], outs[0]);
      assert.deepEqual(outs[2], outs[0]);
    }
  });
}

function loraPair(inDim: number, outDim: number, rank: number, rnd: () => number): LoraPair {
  return {
    A: randomF32(rank * inDim, rnd, 0.5), B: randomF32(outDim * rank, rnd, 0.5),
    gradA: randomF32(rank * inDim, rnd, 0.1), gradB: randomF32(outDim * rank, rnd, 0.1), inDim, outDim,
  };
}

for (const level of levels) {
  test(`native LoRA branch = the matmul reference to float rounding, level ${level}; threads give the same bits`, () => {
    const rnd = seededRandom(5);
    for (const [T, inDim, outDim, rank, withMask, withDx] of [[130, 96, 40, 8, true, true], [1, 7, 33, 1, false, true], [200, 37, 19, 16, true, false], [64, 576, 576, 8, false, false]] as const) {
      const ref = loraPair(inDim, outDim, rank, rnd);
      const x = randomF32(T * inDim, rnd, 1), dy = randomF32(T * outDim, rnd, 1), y0 = randomF32(T * outDim, rnd, 1), dx0 = randomF32(T * inDim, rnd, 1);
      const p = 0.3, scale = 2.5; // sums of up to 576 products: float rounding of ~1e-5 relative
      const mask = withMask ? Uint8Array.from({ length: T * inDim }, () => (rnd() < p ? 0 : 1)) : null;
      const drop = mask ? { mask, p } : null;
      const yRef = y0.slice();
      const hRef = loraLinearForwardReference(yRef, x, T, ref, rank, scale, drop);
      const refPair = { ...ref, gradA: ref.gradA.slice(), gradB: ref.gradB.slice() };
      const dxRef = withDx ? dx0.slice() : null;
      loraLinearBackwardReference(dxRef, dy, x, hRef, T, refPair, rank, scale, drop);
      const runs: Float32Array[][] = [];
      for (const threads of [1, 2, 3]) {
        const k = atLevel(level, threads);
        const y = y0.slice(), h = new Float32Array(T * rank);
        k.loraForward(y, h, x, ref.A, ref.B, mask, 1 / (1 - p), T, inDim, outDim, rank, scale);
        assert.ok(maxRelDiff(h, hRef) < 1e-4, `h differs by ${maxRelDiff(h, hRef)}`);
        assert.ok(maxRelDiff(y, yRef) < 1e-4, `y differs by ${maxRelDiff(y, yRef)}`);
        const gA = ref.gradA.slice(), gB = ref.gradB.slice(), dx = withDx ? dx0.slice() : null;
        k.loraBackward(dx, gA, gB, dy, x, h, ref.A, ref.B, mask, 1 / (1 - p), T, inDim, outDim, rank, scale);
        assert.ok(maxRelDiff(gA, refPair.gradA) < 1e-4, `gradA differs by ${maxRelDiff(gA, refPair.gradA)}`);
        assert.ok(maxRelDiff(gB, refPair.gradB) < 1e-4, `gradB differs by ${maxRelDiff(gB, refPair.gradB)}`);
        if (dx) assert.ok(maxRelDiff(dx, dxRef!) < 1e-4, `dx differs by ${maxRelDiff(dx, dxRef!)}`);
        runs.push([y, h, gA, gB, ...(dx ? [dx] : [])]);
      }
      assert.deepEqual(runs[1], runs[0]);
      assert.deepEqual(runs[2], runs[0]);
    }
  });

  test(`native RMSNorm = the JavaScript reference to float rounding, level ${level}; threads give the same bits`, () => {
    const rnd = seededRandom(9);
    for (const [T, C] of [[1, 1], [37, 576], [5, 13]] as const) {
      const x = randomF32(T * C, rnd, 3), w = randomF32(C, rnd, 2), dout = randomF32(T * C, rnd, 1), dinp0 = randomF32(T * C, rnd, 1);
      if (T > 1) x.fill(0, 0, C); // an all-zero row: rstd = 1/sqrt(eps)
      const out = new Float64Array(T * C), rstd = new Float64Array(T), dinp = Float64Array.from(dinp0);
      rmsnormForward(out, rstd, Float64Array.from(x), Float64Array.from(w), T, C, 1e-5);
      rmsnormBackward(dinp, null, Float64Array.from(dout), Float64Array.from(x), Float64Array.from(w), rstd, T, C);
      const runs: Float32Array[][] = [];
      for (const threads of [1, 2]) {
        const k = atLevel(level, threads);
        const o = new Float32Array(T * C), r = new Float32Array(T), d = dinp0.slice();
        k.rmsnormForward(o, r, x, w, T, C, 1e-5);
        k.rmsnormBackward(d, dout, x, w, r, T, C);
        assert.ok(maxRelDiff(o, out) < 1e-5 && maxRelDiff(r, rstd) < 1e-5, `T = ${T}, C = ${C}: forward differs`);
        assert.ok(maxRelDiff(d, dinp) < 1e-5, `T = ${T}, C = ${C}: backward differs by ${maxRelDiff(d, dinp)}`);
        runs.push([o, r, d]);
      }
      assert.deepEqual(runs[1], runs[0]);
    }
  });

  test(`native quantization and dequantization = quantize.ts bit for bit, level ${level}; threads give the same bits`, () => {
    const rnd = seededRandom(13);
    for (const [rows, cols, bits] of [[37, 576, 8], [5, 1, 8], [20, 33, 16], [3, 100, 2], [17, 64, 5]] as const) {
      const x = randomF32(rows * cols, rnd, 4);
      x.fill(0, 0, cols); // a zero row
      if (rows > 2) {
        x.fill(1e-45, cols, 2 * cols); // a row whose scale underflows
        for (let c = 0; c < cols; c++) x[2 * cols + c] = (c % 7) - 3 + 0.5; // ties: half to even
      }
      x[rows * cols - 1] = 3e38;
      const qmax = symmetricQmax(bits);
      const want = bits <= 8 ? new Int8Array(rows * cols) : new Int16Array(rows * cols), wantScales = new Float32Array(rows);
      quantizeRowsReference(x, rows, cols, bits, want, wantScales);
      const colScale = randomF32(cols, rnd, 0.01);
      const scaled = Float32Array.from(x, (v, i) => v * colScale[i % cols]!);
      const wantS = bits <= 8 ? new Int8Array(rows * cols) : new Int16Array(rows * cols), wantSScales = new Float32Array(rows);
      quantizeRowsReference(scaled, rows, cols, bits, wantS, wantSScales);
      for (const threads of [1, 2]) {
        const k = atLevel(level, threads);
        const got = bits <= 8 ? new Int8Array(rows * cols).fill(9) : new Int16Array(rows * cols).fill(9), scales = new Float32Array(rows);
        assert.equal(k.quantizeRows(x, null, rows, cols, qmax, got, scales), -1);
        assert.deepEqual(got, want);
        assert.deepEqual(scales, wantScales);
        assert.equal(k.quantizeRows(x, colScale, rows, cols, qmax, got, scales), -1);
        assert.deepEqual(got, wantS);
        assert.deepEqual(scales, wantSScales);
      }
      const T = rows, OC = cols;
      const acc32 = Int32Array.from({ length: T * OC }, () => Math.floor((rnd() * 2 - 1) * 2 ** 31));
      const acc64 = Float64Array.from({ length: T * OC }, () => Math.floor((rnd() * 2 - 1) * 2 ** 52));
      for (const acc of [acc32, acc64]) {
        const yWant = new Float32Array(T * OC).fill(7), yGot = yWant.slice();
        const [t0, tn, o0, on] = [1, Math.max(0, T - 2), Math.min(1, OC - 1), Math.max(1, OC - 2)];
        dequantizeForwardRangeReference(acc, wantScales, colScale, OC, yWant, t0, tn, o0, on);
        atLevel(level, 1).dequantize(acc, wantScales, colScale, OC, yGot, t0, tn, o0, on);
        assert.deepEqual(yGot, yWant);
        dequantizeBackwardRangeReference(acc, wantScales, OC, yWant, 0, T, 0, OC);
        atLevel(level, 1).dequantize(acc, wantScales, null, OC, yGot, 0, T, 0, OC);
        assert.deepEqual(yGot, yWant);
      }
    }
  });

  test(`native dropout mask = the JavaScript reference bit for bit, level ${level}`, () => {
    for (const [n, threshold] of [[1, 0], [1000, 3277], [4097, 65535], [17, 65536]] as const) {
      const stream = randomBytes(2 * n);
      const want = new Uint8Array(n), got = new Uint8Array(n);
      dropoutMaskReference(stream, threshold, want);
      atLevel(level, 1).dropoutMask(stream, threshold, got);
      assert.deepEqual(got, want);
    }
  });
}

test('native model ops reject bad sizes and targets with clear errors', () => {
  if (!loaded.kernels) return; // see the first test
  const k = loadNativeKernels().kernels!;
  assert.throws(() => k.crossEntropy(new Float32Array(5), new Int32Array(2), 2, 3, true, 1, new Float64Array(2)), /logits has 5 elements, expected at least 6/);
  assert.throws(() => k.crossEntropy(new Float32Array(6), Int32Array.from([0, 3]), 2, 3, true, 1, new Float64Array(2)), /target 3 at position 1 is neither -100 nor in \[0, 3\)/);
  assert.throws(() => k.crossEntropy(new Float32Array(6), new Int32Array(2), 2, 3, true, 1, new Float64Array(1)), /losses has 1 elements/);
  assert.throws(() => k.swigluForward(new Float32Array(3), new Float32Array(4), new Float32Array(4), 4), /out has 3 elements/);
  assert.throws(() => k.swigluBackward(new Float32Array(4), new Float32Array(3), new Float32Array(4), new Float32Array(4), new Float32Array(4), 4), /dup has 3 elements/);
  const pair = loraPair(4, 3, 2, seededRandom(1));
  assert.throws(() => k.loraForward(new Float32Array(5), new Float32Array(4), new Float32Array(8), pair.A, pair.B, null, 1, 2, 4, 3, 2, 1), /y has 5 elements, expected at least 6/);
  assert.throws(() => k.loraForward(new Float32Array(6), new Float32Array(4), new Float32Array(8), pair.A, pair.B, new Uint8Array(7), 1, 2, 4, 3, 2, 1), /mask has 7 elements, expected at least 8/);
  assert.throws(() => k.loraBackward(null, pair.gradA, new Float32Array(5), new Float32Array(6), new Float32Array(8), new Float32Array(4), pair.A, pair.B, null, 1, 2, 4, 3, 2, 1), /gradB has 5 elements/);
  assert.throws(() => k.loraForward(new Float32Array(6), new Float32Array(4), new Float32Array(8), pair.A, pair.B, null, NaN, 2, 4, 3, 2, 1), /keep must be a finite number/);
  assert.throws(() => k.rmsnormBackward(new Float32Array(6), new Float32Array(6), new Float32Array(6), new Float32Array(3), new Float32Array(1), 2, 3), /rstd has 1 elements/);
  assert.throws(() => k.dropoutMask(new Uint8Array(3), 5, new Uint8Array(2)), /stream has 3 elements, expected at least 4/);
  const q = new Int8Array(6), sc = new Float32Array(2);
  assert.equal(k.quantizeRows(Float32Array.from([1, 2, NaN, 4, Infinity, 6]), null, 2, 3, 127, q, sc), 2);
  assert.equal(k.quantizeRows(Float32Array.from([1, 2, 3, 4, 5, 6]), Float32Array.from([1, 3e38, 1]), 2, 3, 127, q, sc), -3, 'x[1] * colScale[1] overflows: -(1 + 2)');
  assert.throws(() => k.quantizeRows(new Float32Array(6), null, 2, 3, 200, q, sc), /Int8Array \(qmax <= 127\)/);
  assert.throws(() => k.dequantize(new Int32Array(5), sc, null, 3, new Float32Array(6), 0, 2, 0, 3), /acc is shorter/);
  assert.throws(() => k.dequantize(new Int32Array(6), sc, null, 3, new Float32Array(6), 0, 2, 1, 3), /on must be an integer in \[0, 2\]/);
  k.threads = 0;
  assert.throws(() => k.swigluForward(new Float32Array(4), new Float32Array(4), new Float32Array(4), 4), /threads must be an integer in \[1, 256\]/);
});
