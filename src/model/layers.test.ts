// Finite-difference checks (in float64) of every layer's backward, plus the masking rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ATTN_QUERY_BLOCK, attentionBackward, attentionBackwardReference, attentionForward, attentionForwardReference, crossEntropyBackward, crossEntropyForward, crossEntropyForwardBackwardInPlace,
  IGNORE_INDEX, rmsnormBackward, rmsnormForward, ropeBackward, ropeForward, ropeInvFreq, ropeTables, swigluBackward,
  swigluForward, type Vec,
} from './layers.js';
import { seededRandom } from '../util/random.js';

/** Deterministic test data (Math.random is fine for test data, but reproducible failures are nicer). */
const rng = seededRandom;

function randn(n: number, r: () => number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}
function dot(a: Vec, b: Vec): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Central differences of loss() w.r.t. every entry of x, compared with the analytic gradient. */
function checkGrad(name: string, x: Float64Array, analytic: Float64Array, loss: () => number, eps = 1e-5, tol = 1e-6): void {
  let maxAn = 0, maxErr = 0;
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    x[i] = x0 + eps; const lp = loss();
    x[i] = x0 - eps; const lm = loss();
    x[i] = x0;
    const fd = (lp - lm) / (2 * eps);
    maxAn = Math.max(maxAn, Math.abs(analytic[i]!));
    maxErr = Math.max(maxErr, Math.abs(fd - analytic[i]!));
  }
  assert.ok(maxAn > 1e-3, `${name}: analytic gradient is (near) zero, the check would be vacuous`);
  assert.ok(maxErr <= tol * maxAn, `${name}: max |fd - analytic| = ${maxErr} vs max |analytic| = ${maxAn}`);
}

test('rmsnorm backward matches finite differences (input and weight)', () => {
  const r = rng(1);
  const T = 3, C = 8, eps = 1e-5;
  const x = randn(T * C, r), w = randn(C, r), R = randn(T * C, r);
  const loss = (): number => { const y = new Float64Array(T * C); rmsnormForward(y, null, x, w, T, C, eps); return dot(y, R); };
  const rstd = new Float64Array(T);
  rmsnormForward(new Float64Array(T * C), rstd, x, w, T, C, eps);
  const dx = new Float64Array(T * C), dw = new Float64Array(C);
  rmsnormBackward(dx, dw, R, x, w, rstd, T, C);
  checkGrad('rmsnorm dx', x, dx, loss);
  checkGrad('rmsnorm dw', w, dw, loss);
});

test('rope backward matches finite differences (llama3 scaling), and rope is a rotation', () => {
  const r = rng(2);
  const T = 5, nH = 2, hd = 8;
  const inv = ropeInvFreq(hd, 10000, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 });
  const { cos, sin } = ropeTables(Int32Array.from([0, 3, 1, 7, 40]), inv, T);
  const x = randn(T * nH * hd, r), R = randn(T * nH * hd, r);
  const loss = (): number => { const y = x.slice(); ropeForward(y, cos, sin, T, nH, hd); return dot(y, R); };
  const dx = R.slice();
  ropeBackward(dx, cos, sin, T, nH, hd);
  checkGrad('rope dx', x, dx, loss);
  // Norm-preserving per (token, head) and position 0 is the identity.
  const y = x.slice();
  ropeForward(y, cos, sin, T, nH, hd);
  assert.ok(Math.abs(dot(y, y) - dot(x, x)) < 1e-6 * dot(x, x)); // cos/sin tables are fp32
  for (let i = 0; i < nH * hd; i++) assert.ok(Math.abs(y[i]! - x[i]!) < 1e-12);
});

test('rope inverse frequencies: llama3 keeps high, divides low and smooths medium frequencies', () => {
  const hd = 64, theta = 500000;
  const base = ropeInvFreq(hd, theta, null);
  const sc = { type: 'llama3' as const, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
  const l3 = ropeInvFreq(hd, theta, sc);
  let hi = 0, lo = 0, mid = 0;
  for (let i = 0; i < hd / 2; i++) {
    const wl = (2 * Math.PI) / base[i]!;
    if (wl < 8192 / 4) { assert.equal(l3[i], base[i]); hi++; }
    else if (wl > 8192) { assert.ok(Math.abs(l3[i]! - base[i]! / 32) <= 1e-6 * base[i]!); lo++; }
    else { assert.ok(l3[i]! < base[i]! && l3[i]! > base[i]! / 32); mid++; }
  }
  assert.ok(hi > 0 && lo > 0 && mid > 0, `cases hi ${hi} lo ${lo} mid ${mid}`);
  const lin = ropeInvFreq(hd, theta, { type: 'linear', factor: 4 });
  for (let i = 0; i < hd / 2; i++) assert.ok(Math.abs(lin[i]! - base[i]! / 4) <= 1e-6 * base[i]!);
});

const attnCase = { T: 8, nHeads: 4, nKvHeads: 2, headDim: 4 };
// Two packed sequences, a padding token with its own id, and a sequence id that re-appears later.
const seqIds = Int32Array.from([0, 0, 0, 1, 1, 9, 1, 0]);

test('attention backward (reference, GQA + packing mask) matches finite differences', () => {
  const r = rng(3);
  const { T, nHeads, nKvHeads, headDim } = attnCase;
  const q = randn(T * nHeads * headDim, r), k = randn(T * nKvHeads * headDim, r), v = randn(T * nKvHeads * headDim, r);
  const R = randn(T * nHeads * headDim, r);
  const loss = (): number => { const o = new Float64Array(T * nHeads * headDim); attentionForwardReference(o, null, q, k, v, seqIds, attnCase); return dot(o, R); };
  const out = new Float64Array(T * nHeads * headDim), lse = new Float64Array(nHeads * T);
  attentionForwardReference(out, lse, q, k, v, seqIds, attnCase);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  attentionBackwardReference(dq, dk, dv, R, q, k, v, out, lse, seqIds, attnCase);
  checkGrad('attention dq', q, dq, loss);
  checkGrad('attention dk', k, dk, loss);
  checkGrad('attention dv', v, dv, loss);
});

test('attention forward equals a naive masked softmax and respects the packing mask', () => {
  const r = rng(4);
  const { T, nHeads, nKvHeads, headDim: hd } = attnCase;
  const q = randn(T * nHeads * hd, r), k = randn(T * nKvHeads * hd, r), v = randn(T * nKvHeads * hd, r);
  const out = new Float64Array(T * nHeads * hd);
  attentionForwardReference(out, null, q, k, v, seqIds, attnCase);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const kh = Math.floor(h / (nHeads / nKvHeads));
      const w: number[] = [];
      for (let s = 0; s < T; s++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[(t * nHeads + h) * hd + i]! * k[(s * nKvHeads + kh) * hd + i]!;
        w.push(s <= t && seqIds[s] === seqIds[t] ? Math.exp(d / Math.sqrt(hd)) : 0);
      }
      const Z = w.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) {
        let e = 0;
        for (let s = 0; s < T; s++) e += (w[s]! / Z) * v[(s * nKvHeads + kh) * hd + i]!;
        assert.ok(Math.abs(e - out[(t * nHeads + h) * hd + i]!) < 1e-12, `t ${t} h ${h} i ${i}`);
      }
    }
  }
  // The padding token (own id) sees only itself: its output is its own v.
  const kh0 = 0;
  for (let i = 0; i < hd; i++) assert.ok(Math.abs(out[(5 * nHeads) * hd + i]! - v[(5 * nKvHeads + kh0) * hd + i]!) < 1e-12);
});

test('blocked attention (matmul kernels) equals the reference, forward and backward, across block edges', () => {
  const r = rng(7);
  const T = 2 * ATTN_QUERY_BLOCK + 23, nHeads = 6, nKvHeads = 2, headDim = 8;
  const dims = { T, nHeads, nKvHeads, headDim };
  // A long run crossing block edges, short runs, padding with own ids, and an id that comes back.
  const ids = Int32Array.from({ length: T }, (_, t) => (t < 90 ? 0 : t < 100 ? 1 : t < 104 ? 100 + t : t < 140 ? 2 : t < 145 ? 1 : 3));
  for (const seq of [ids, new Int32Array(T)]) {
    const f32 = (n: number): Float32Array => Float32Array.from(randn(n, r));
    const q = f32(T * nHeads * headDim), k = f32(T * nKvHeads * headDim), v = f32(T * nKvHeads * headDim), dout = f32(T * nHeads * headDim);
    const o1 = new Float32Array(q.length), l1 = new Float32Array(nHeads * T), o2 = new Float32Array(q.length), l2 = new Float32Array(nHeads * T);
    attentionForwardReference(o1, l1, q, k, v, seq, dims);
    attentionForward(o2, l2, q, k, v, seq, dims);
    const close = (a: Float32Array, b: Float32Array, what: string): void => {
      let m = 0, e = 0;
      for (let i = 0; i < a.length; i++) { m = Math.max(m, Math.abs(b[i]!)); e = Math.max(e, Math.abs(a[i]! - b[i]!)); }
      assert.ok(m > 0 && e <= 1e-5 * m, `${what}: max err ${e}, max ${m}`);
    };
    close(o2, o1, 'out'); close(l2, l1, 'lse');
    const g1 = [new Float32Array(q.length), new Float32Array(k.length), new Float32Array(v.length)] as const;
    const g2 = [new Float32Array(q.length), new Float32Array(k.length), new Float32Array(v.length)] as const;
    attentionBackwardReference(g1[0], g1[1], g1[2], dout, q, k, v, o1, l1, seq, dims);
    attentionBackward(g2[0], g2[1], g2[2], dout, q, k, v, o2, l2, seq, dims);
    close(g2[0], g1[0], 'dq'); close(g2[1], g1[1], 'dk'); close(g2[2], g1[2], 'dv');
  }
});

test('swiglu backward matches finite differences', () => {
  const r = rng(5);
  const n = 20;
  const g = randn(n, r, 3), u = randn(n, r), R = randn(n, r);
  const loss = (): number => { const o = new Float64Array(n); swigluForward(o, g, u, n); return dot(o, R); };
  const dg = new Float64Array(n), du = new Float64Array(n);
  swigluBackward(dg, du, R, g, u, n);
  checkGrad('swiglu dgate', g, dg, loss);
  checkGrad('swiglu dup', u, du, loss);
});

test('cross entropy: finite differences, ignored labels, fused in-place form', () => {
  const r = rng(6);
  const T = 5, V = 7;
  const logits = randn(T * V, r, 3);
  const targets = Int32Array.from([2, IGNORE_INDEX, 6, 0, IGNORE_INDEX]);
  const denom = 3;
  const loss = (): number => crossEntropyForward(null, logits, targets, T, V) / denom;
  const d = new Float64Array(T * V);
  crossEntropyBackward(d, logits, targets, T, V, denom);
  checkGrad('cross entropy dlogits', logits, d, loss);
  for (let j = 0; j < V; j++) { assert.equal(d[V + j], 0); assert.equal(d[4 * V + j], 0); }
  // Per-token values against the textbook formula.
  const losses = new Float64Array(T);
  crossEntropyForward(losses, logits, targets, T, V);
  let Z = 0;
  for (let j = 0; j < V; j++) Z += Math.exp(logits[j]!);
  assert.ok(Math.abs(losses[0]! - (Math.log(Z) - logits[2]!)) < 1e-12);
  assert.equal(losses[1], 0);
  const fused = logits.slice();
  const sum = crossEntropyForwardBackwardInPlace(fused, targets, T, V, denom);
  assert.ok(Math.abs(sum / denom - loss()) < 1e-12);
  for (let i = 0; i < d.length; i++) assert.ok(Math.abs(fused[i]! - d[i]!) < 1e-12);
  assert.throws(() => crossEntropyForward(null, logits, Int32Array.from([0, 0, 0, 0, V]), T, V), /helora: target/);
});
