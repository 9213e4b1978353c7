// The native attention (src/kernels/native/attention.c) at every CPU level this machine runs,
// against attentionForwardReference / attentionBackwardReference: packed sequences of odd lengths,
// ids that come back, GQA groups 1 and 3, head dims 64 and odd ones; the same bits for 1 and 2
// or 3 threads; wrong sizes refused. Without the addon these tests fail unless HELORA_KERNELS=wasm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attentionBackwardReference, attentionForwardReference, type AttentionDims } from '../model/layers.js';
import { loadNativeKernels, type NativeKernels } from './native.js';

const loaded = loadNativeKernels();
const wasmOnly = process.env.HELORA_KERNELS === 'wasm';

test('the native attention kernels are loaded (unless HELORA_KERNELS=wasm)', () => {
  if (wasmOnly) return;
  assert.ok(loaded.kernels, `native kernels missing: ${loaded.error}`);
});

const nk: NativeKernels | null = loaded.kernels;
const levels = nk ? nk.levels() : [];

/** Deterministic normal-ish values. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
function randn(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() + r() + r() - 1.5) * 2 * scale;
  return a;
}

/** Runs of the given lengths, ids 0, 1, ...; `back` makes the last run reuse id 0. */
function seqIdsOf(lengths: number[], back = false): Int32Array {
  const ids: number[] = [];
  lengths.forEach((n, i) => { for (let j = 0; j < n; j++) ids.push(back && i === lengths.length - 1 ? 0 : i); });
  return Int32Array.from(ids);
}

function close(got: Float32Array, want: Float32Array, what: string, tol = 2e-5): void {
  let m = 0, e = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    m = Math.max(m, Math.abs(want[i]!));
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= e)) { e = d; at = i; }
  }
  assert.ok(m > 0 && e <= tol * Math.max(1, m), `${what}: max err ${e} at ${at} (max |value| ${m})`);
}

interface Case { lengths: number[]; back?: boolean; nHeads: number; nKvHeads: number; headDim: number; qScale?: number }

const cases: Case[] = [
  { lengths: [1, 5, 64, 65, 130], nHeads: 3, nKvHeads: 1, headDim: 64 },
  { lengths: [1, 5, 64, 65, 130], nHeads: 2, nKvHeads: 2, headDim: 24 },
  { lengths: [130, 1, 65, 5, 64], nHeads: 6, nKvHeads: 2, headDim: 40 },
  { lengths: [70, 3, 20, 40], back: true, nHeads: 3, nKvHeads: 1, headDim: 17 },
  { lengths: [200], nHeads: 4, nKvHeads: 4, headDim: 64 }, // few (head, sequence) tasks: backward cuts the sequence into parts
  { lengths: [300], nHeads: 1, nKvHeads: 1, headDim: 16 },
  { lengths: [1], nHeads: 8, nKvHeads: 1, headDim: 1 },
  { lengths: [3, 66, 2], nHeads: 8, nKvHeads: 1, headDim: 1 },
  { lengths: [100, 29], nHeads: 2, nKvHeads: 1, headDim: 32, qScale: 8 }, // sharp softmax rows
];

function inputs(c: Case, seed: number) {
  const r = rng(seed);
  const seqIds = seqIdsOf(c.lengths, c.back);
  const T = seqIds.length;
  const d: AttentionDims = { T, nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim };
  const nq = T * c.nHeads * c.headDim, nkv = T * c.nKvHeads * c.headDim;
  return { seqIds, T, d, q: randn(nq, r, 1.5 * (c.qScale ?? 1)), k: randn(nkv, r, 1.5), v: randn(nkv, r), dout: randn(nq, r), nq, nkv };
}

for (const level of levels) {
  test(`native attention = the reference, forward and backward (accumulating), level ${level}`, () => {
    const prev = nk!.setLevel(level);
    const threads = nk!.threads;
    try {
      for (const [ci, c] of cases.entries()) {
        const x = inputs(c, 11 + ci);
        const label = `${level} case ${ci} (${c.lengths.join(',')}${c.back ? ' id back' : ''}; ${c.nHeads}/${c.nKvHeads} heads, hd ${c.headDim})`;
        const o1 = new Float32Array(x.nq), l1 = new Float32Array(c.nHeads * x.T);
        attentionForwardReference(o1, l1, x.q, x.k, x.v, x.seqIds, x.d);
        const g1 = [randn(x.nq, rng(ci), 0.1), randn(x.nkv, rng(ci + 50), 0.1), randn(x.nkv, rng(ci + 90), 0.1)];
        const init = g1.map((g) => Float32Array.from(g));
        attentionBackwardReference(g1[0]!, g1[1]!, g1[2]!, x.dout, x.q, x.k, x.v, o1, l1, x.seqIds, x.d);

        let first: Float32Array[] | null = null;
        for (const t of [1, 2, 3]) {
          nk!.threads = t;
          const o2 = new Float32Array(x.nq).fill(NaN), l2 = new Float32Array(c.nHeads * x.T).fill(NaN);
          nk!.attentionForward(o2, l2, x.q, x.k, x.v, x.seqIds, x.T, c.nHeads, c.nKvHeads, c.headDim);
          close(o2, o1, `${label} out`);
          close(l2, l1, `${label} lse`);
          const o3 = new Float32Array(x.nq);
          nk!.attentionForward(o3, null, x.q, x.k, x.v, x.seqIds, x.T, c.nHeads, c.nKvHeads, c.headDim);
          assert.deepEqual(o3, o2, `${label}: out without lse`);
          const g2 = init.map((g) => Float32Array.from(g));
          nk!.attentionBackward(g2[0]!, g2[1]!, g2[2]!, x.dout, x.q, x.k, x.v, o2, l2, x.seqIds, x.T, c.nHeads, c.nKvHeads, c.headDim);
          close(g2[0]!, g1[0]!, `${label} dq`);
          close(g2[1]!, g1[1]!, `${label} dk`);
          close(g2[2]!, g1[2]!, `${label} dv`);
          const all = [o2, l2, ...g2];
          if (!first) first = all;
          else all.forEach((a, i) => assert.deepEqual(a, first![i], `${label}: ${t} threads differ from 1 (array ${i})`));
        }
      }
    } finally {
      nk!.threads = threads;
      nk!.setLevel(prev);
    }
  });
}

test('native attention refuses wrong sizes with clear errors', () => {
  if (!nk) return;
  const T = 10, nH = 4, nKv = 2, hd = 8;
  const q = new Float32Array(T * nH * hd), k = new Float32Array(T * nKv * hd), v = new Float32Array(T * nKv * hd);
  const out = new Float32Array(T * nH * hd), lse = new Float32Array(nH * T), seq = new Int32Array(T);
  const fwd = (o: Partial<{ q: Float32Array; k: Float32Array; v: Float32Array; out: Float32Array; lse: Float32Array; seq: Int32Array; nH: number; nKv: number; hd: number }>) =>
    () => nk.attentionForward(o.out ?? out, o.lse ?? lse, o.q ?? q, o.k ?? k, o.v ?? v, o.seq ?? seq, T, o.nH ?? nH, o.nKv ?? nKv, o.hd ?? hd);
  fwd({})(); // the right sizes run
  assert.throws(fwd({ q: q.subarray(1) }), /q has 319 elements, expected at least 320/);
  assert.throws(fwd({ k: k.subarray(8) }), /k has 152 elements/);
  assert.throws(fwd({ v: v.subarray(0, 10) }), /v has 10 elements/);
  assert.throws(fwd({ out: out.subarray(0, 5) }), /out has 5 elements/);
  assert.throws(fwd({ lse: lse.subarray(0, 39) }), /lse has 39 elements/);
  assert.throws(fwd({ seq: seq.subarray(0, 9) }), /seqIds has 9 elements/);
  assert.throws(fwd({ nKv: 3 }), /heads must be a multiple of kv heads/);
  assert.throws(fwd({ hd: 0 }), /headDim must be an integer/);
  const bwd = (o: Partial<{ dq: Float32Array; dk: Float32Array; dv: Float32Array; dout: Float32Array; lse: Float32Array }>) =>
    () => nk.attentionBackward(o.dq ?? new Float32Array(q.length), o.dk ?? new Float32Array(k.length), o.dv ?? new Float32Array(v.length),
      o.dout ?? new Float32Array(q.length), q, k, v, out, o.lse ?? lse, seq, T, nH, nKv, hd);
  bwd({})();
  assert.throws(bwd({ dq: new Float32Array(q.length - 1) }), /dq has 319 elements/);
  assert.throws(bwd({ dk: new Float32Array(k.length - 1) }), /dk has 159 elements/);
  assert.throws(bwd({ dv: new Float32Array(3) }), /dv has 3 elements/);
  assert.throws(bwd({ dout: new Float32Array(7) }), /dout has 7 elements/);
  assert.throws(bwd({ lse: new Float32Array(2) }), /lse has 2 elements/);
  const saved = nk.threads;
  nk.threads = 0;
  try {
    assert.throws(fwd({}), /threads must be an integer in \[1, 256\]/);
  } finally {
    nk.threads = saved;
  }
});
