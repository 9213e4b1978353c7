/**
 * Llama-family layers as explicit forward/backward pairs over flat row-major Float32Arrays
 * (llm.c style, no autograd). Activations are token-major: [T, C].
 *
 * Conventions: forward functions overwrite their outputs; backward functions ACCUMULATE (+=)
 * into their input gradients, so residual branches can share one gradient buffer.
 * Sums run in JS doubles and are rounded once when stored.
 *
 * With the native kernels, fp32 RMSNorm, SwiGLU, cross entropy and attention run there, over every core
 * (src/kernels/native/model-ops.c, attention.c); the JavaScript bodies here are their reference and the
 * WebAssembly backend's path.
 */

import { matmulBackwardInput, matmulBackwardWeight, matmulForward } from '../kernels/matmul-f32.js';
import { nativeKernels, type NativeKernels } from '../kernels/native.js';
import type { RopeScaling } from './config.js';

/** Label value of positions that take no part in the loss (PyTorch / Hugging Face convention). */
export const IGNORE_INDEX = -100;

/** fp32 in the model; fp64 in the finite-difference tests. */
export type Vec = Float32Array | Float64Array;

/** The native kernels when every array is fp32 (the fp64 finite-difference tests stay in JS). */
function nativeF32(...arrays: Vec[]): NativeKernels | null {
  const nk = nativeKernels();
  return nk && arrays.every((a) => a instanceof Float32Array) ? nk : null;
}

function check(cond: boolean, msg: string): void {
  if (!cond) throw new Error('helora: ' + msg);
}

// ---------------------------------------------------------------------------------------------
// Embedding

/** out[T,C] = table[tokens[t], :]. Token ids are validated (they can come from user data). */
export function embeddingForward(out: Vec, tokens: Int32Array, table: Vec, T: number, C: number, vocab: number): void {
  for (let t = 0; t < T; t++) {
    const id = tokens[t]!;
    check(id >= 0 && id < vocab, `token id ${id} at position ${t} is outside the vocabulary [0, ${vocab})`);
    out.set(table.subarray(id * C, id * C + C), t * C);
  }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = w * x / sqrt(mean(x^2) + eps), computed in fp32 like HF's LlamaRMSNorm.

/** out[T,C] = weight * x * rstd; writes rstd[T] (saved for backward). */
export function rmsnormForward(out: Vec, rstd: Vec | null, inp: Vec, weight: Vec, T: number, C: number, eps: number): void {
  const nk = nativeF32(out, inp, weight, ...(rstd ? [rstd] : []));
  if (nk) return nk.rmsnormForward(out as Float32Array, rstd as Float32Array | null, inp as Float32Array, weight as Float32Array, T, C, eps);
  for (let t = 0; t < T; t++) {
    const o = t * C;
    let ss = 0;
    for (let c = 0; c < C; c++) { const v = inp[o + c]!; ss += v * v; }
    const r = 1 / Math.sqrt(ss / C + eps);
    if (rstd) rstd[t] = r;
    for (let c = 0; c < C; c++) out[o + c] = weight[c]! * (inp[o + c]! * r);
  }
}

/**
 * dinp += d/dx, dweight += d/dw (dweight optional: norms are frozen in LoRA training).
 * With n = x*r: dx_i = r*(w_i dy_i) - x_i r^3/C * sum_j(w_j dy_j x_j).
 */
export function rmsnormBackward(dinp: Vec, dweight: Vec | null, dout: Vec, inp: Vec, weight: Vec, rstd: Vec, T: number, C: number): void {
  const nk = dweight ? null : nativeF32(dinp, dout, inp, weight, rstd);
  if (nk) return nk.rmsnormBackward(dinp as Float32Array, dout as Float32Array, inp as Float32Array, weight as Float32Array, rstd as Float32Array, T, C);
  for (let t = 0; t < T; t++) {
    const o = t * C;
    const r = rstd[t]!;
    let dot = 0;
    for (let c = 0; c < C; c++) dot += weight[c]! * dout[o + c]! * inp[o + c]!;
    const k = (dot * r * r * r) / C;
    for (let c = 0; c < C; c++) {
      const x = inp[o + c]!;
      const dy = dout[o + c]!;
      dinp[o + c]! += r * weight[c]! * dy - x * k;
      if (dweight) dweight[c]! += dy * x * r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rotary position embeddings (HF rotate_half convention: pairs (i, i + headDim/2)).

const f32 = Math.fround;

/**
 * Inverse frequencies [headDim/2], rounded to fp32 the way HF computes them
 * (base ** (arange(0, dim, 2) / dim) in fp32, then 1 / that), with Llama-3 or linear scaling
 * applied like HF's _compute_llama3_parameters / linear rope.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling): Float32Array {
  check(headDim % 2 === 0 && headDim > 0, `head dim must be even and positive, got ${headDim}`);
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f32(1 / f32(Math.pow(theta, f32((2 * i) / headDim))));
  if (!scaling) return inv;
  if (scaling.type === 'linear') {
    // HF linear scaling divides positions by the factor; dividing the frequency is the same angle.
    for (let i = 0; i < half; i++) inv[i] = f32(inv[i]! / scaling.factor);
    return inv;
  }
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldCtx } = scaling;
  const lowFreqWavelen = oldCtx / lowFreqFactor;
  const highFreqWavelen = oldCtx / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = (2 * Math.PI) / f;
    let g = wavelen > lowFreqWavelen ? f / factor : f;
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    if (isMedium) {
      const smooth = (oldCtx / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      g = ((1 - smooth) * g) / factor + smooth * g;
    }
    inv[i] = f32(g);
  }
  return inv;
}

/** cos/sin tables [T, headDim/2] for the given positions; the angle is rounded to fp32 like HF. */
export function ropeTables(positions: Int32Array, invFreq: Float32Array, T: number): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(T * half);
  const sin = new Float32Array(T * half);
  for (let t = 0; t < T; t++) {
    const p = positions[t]!;
    check(p >= 0, `position ${p} at index ${t} is negative`);
    for (let i = 0; i < half; i++) {
      const a = f32(p * invFreq[i]!);
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** In place on x[T, nHeads*headDim]: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin. */
export function ropeForward(x: Vec, cos: Vec, sin: Vec, T: number, nHeads: number, headDim: number): void {
  const half = headDim / 2;
  for (let t = 0; t < T; t++) {
    const tb = t * half;
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[tb + i]!, s = sin[tb + i]!;
        const a = x[o + i]!, b = x[o + i + half]!;
        x[o + i] = a * c - b * s;
        x[o + i + half] = b * c + a * s;
      }
    }
  }
}

/** In place on the gradient: applies the transposed rotation (rotation by -angle). */
export function ropeBackward(dx: Vec, cos: Vec, sin: Vec, T: number, nHeads: number, headDim: number): void {
  const half = headDim / 2;
  for (let t = 0; t < T; t++) {
    const tb = t * half;
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[tb + i]!, s = sin[tb + i]!;
        const a = dx[o + i]!, b = dx[o + i + half]!;
        dx[o + i] = a * c + b * s;
        dx[o + i + half] = b * c - a * s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Grouped-query causal attention with a packing mask.
//
// Token t attends to s <= t with seqIds[s] == seqIds[t]. Instead of the T x T x H probability
// matrix (151 MB per layer at T = 2048, 9 heads) only the row log-sum-exp [H, T] is saved;
// backward recomputes the probabilities (flash-attention style).

/** For every token, the first index that holds its sequence id (lower bound of its key range). */
export function sequenceStarts(seqIds: Int32Array, T: number): Int32Array {
  const first = new Map<number, number>();
  const starts = new Int32Array(T);
  for (let t = 0; t < T; t++) {
    const id = seqIds[t]!;
    let f = first.get(id);
    if (f === undefined) { f = t; first.set(id, f); }
    starts[t] = f;
  }
  return starts;
}

export interface AttentionDims { T: number; nHeads: number; nKvHeads: number; headDim: number }

function checkAttn(d: AttentionDims): void {
  check(d.nHeads % d.nKvHeads === 0, `heads (${d.nHeads}) must be a multiple of kv heads (${d.nKvHeads})`);
}

/**
 * Plain-loop reference (any float width; the fp64 finite-difference tests use it).
 * out[T, nHeads*hd] = softmax(q k^T / sqrt(hd) + mask) v, per head, kv head = h / (nHeads/nKvHeads).
 * q: [T, nHeads*hd]; k, v: [T, nKvHeads*hd]; lse: [nHeads*T] (may be null when not training).
 */
export function attentionForwardReference(out: Vec, lse: Vec | null, q: Vec, k: Vec, v: Vec, seqIds: Int32Array, d: AttentionDims): void {
  checkAttn(d);
  const { T, nHeads, nKvHeads, headDim: hd } = d;
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hd);
  const qStride = nHeads * hd, kStride = nKvHeads * hd;
  const starts = sequenceStarts(seqIds, T);
  const scores = new Float64Array(T);
  const acc = new Float64Array(hd);
  for (let t = 0; t < T; t++) {
    const s0 = starts[t]!;
    const sid = seqIds[t]!;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qStride + h * hd;
      const kvh = ((h / group) | 0) * hd;
      let max = -Infinity;
      for (let s = s0; s <= t; s++) {
        if (seqIds[s] !== sid) { scores[s] = -Infinity; continue; }
        const ko = s * kStride + kvh;
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += q[qo + i]! * k[ko + i]!;
        dot *= scale;
        scores[s] = dot;
        if (dot > max) max = dot;
      }
      let sum = 0;
      acc.fill(0);
      for (let s = s0; s <= t; s++) {
        const sc = scores[s]!;
        if (sc === -Infinity) continue;
        const p = Math.exp(sc - max);
        sum += p;
        const vo = s * kStride + kvh;
        for (let i = 0; i < hd; i++) acc[i]! += p * v[vo + i]!;
      }
      const inv = 1 / sum;
      for (let i = 0; i < hd; i++) out[qo + i] = acc[i]! * inv;
      if (lse) lse[h * T + t] = max + Math.log(sum);
    }
  }
}

/**
 * dq, dk, dv += gradients of attentionForwardReference given dout, the saved q, k, v, out and lse.
 * With p = softmax row: dv_s += p_s dout; ds = p_s (dout·v_s - dout·out); dq += scale ds k_s; dk_s += scale ds q.
 */
export function attentionBackwardReference(dq: Vec, dk: Vec, dv: Vec, dout: Vec, q: Vec, k: Vec, v: Vec, out: Vec, lse: Vec, seqIds: Int32Array, d: AttentionDims): void {
  checkAttn(d);
  const { T, nHeads, nKvHeads, headDim: hd } = d;
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hd);
  const qStride = nHeads * hd, kStride = nKvHeads * hd;
  const starts = sequenceStarts(seqIds, T);
  const dqAcc = new Float64Array(hd);
  for (let t = 0; t < T; t++) {
    const s0 = starts[t]!;
    const sid = seqIds[t]!;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qStride + h * hd;
      const kvh = ((h / group) | 0) * hd;
      const l = lse[h * T + t]!;
      let D = 0;
      for (let i = 0; i < hd; i++) D += dout[qo + i]! * out[qo + i]!;
      dqAcc.fill(0);
      for (let s = s0; s <= t; s++) {
        if (seqIds[s] !== sid) continue;
        const ko = s * kStride + kvh;
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += q[qo + i]! * k[ko + i]!;
        const p = Math.exp(dot * scale - l);
        let dp = 0;
        for (let i = 0; i < hd; i++) dp += dout[qo + i]! * v[ko + i]!;
        const ds = p * (dp - D) * scale;
        for (let i = 0; i < hd; i++) {
          dv[ko + i]! += p * dout[qo + i]!;
          dk[ko + i]! += ds * q[qo + i]!;
          dqAcc[i]! += ds * k[ko + i]!;
        }
      }
      for (let i = 0; i < hd; i++) dq[qo + i]! += dqAcc[i]!;
    }
  }
}

/** Queries per block of the blocked attention: S blocks are [64, keys], small enough for cache. */
export const ATTN_QUERY_BLOCK = 64;

interface QueryBlock { t0: number; t1: number; s0: number }

/** Runs of equal sequence id cut into blocks of at most B queries; s0 = first key they may see. */
function queryBlocks(seqIds: Int32Array, T: number, B: number): QueryBlock[] {
  const starts = sequenceStarts(seqIds, T);
  const blocks: QueryBlock[] = [];
  let t0 = 0;
  while (t0 < T) {
    let t1 = t0 + 1;
    while (t1 < T && t1 - t0 < B && seqIds[t1] === seqIds[t0]) t1++;
    blocks.push({ t0, t1, s0: starts[t0]! });
    t0 = t1;
  }
  return blocks;
}

/** dst[T, hd] = scale * head h of x[T, nH*hd]. */
function gatherHead(dst: Float32Array, x: Float32Array, t0: number, t1: number, nH: number, hd: number, h: number, scale: number): void {
  for (let t = t0; t < t1; t++) {
    const src = (t * nH + h) * hd, d = (t - t0) * hd;
    for (let i = 0; i < hd; i++) dst[d + i] = x[src + i]! * scale;
  }
}

/** Head h of x[T, nH*hd] += scale * src[t1-t0, hd]. */
function scatterAddHead(x: Float32Array, src: Float32Array, t0: number, t1: number, nH: number, hd: number, h: number, scale: number): void {
  for (let t = t0; t < t1; t++) {
    const d = (t * nH + h) * hd, o = (t - t0) * hd;
    for (let i = 0; i < hd; i++) x[d + i]! += src[o + i]! * scale;
  }
}

/** Row i of S (query t0+i, keys s0..): true where the key is visible. */
function visible(seqIds: Int32Array, t: number, s: number, sid: number): boolean {
  return s <= t && seqIds[s] === sid;
}

/**
 * Attention for fp32 training: with the native kernels src/kernels/native/attention.c, else (the
 * WebAssembly path) blocked on the matmul kernels (same math as attentionForwardReference): per head and
 * query block, S = (q/sqrt(hd)) K^T over the block's key range, masked softmax, O = P V.
 * q: [T, nHeads*hd]; k, v: [T, nKvHeads*hd]; lse: [nHeads*T] or null.
 */
export function attentionForward(out: Float32Array, lse: Float32Array | null, q: Float32Array, k: Float32Array, v: Float32Array, seqIds: Int32Array, d: AttentionDims): void {
  checkAttn(d);
  const { T, nHeads: nH, nKvHeads: nKv, headDim: hd } = d;
  const nk = nativeF32(out, q, k, v);
  if (nk) return nk.attentionForward(out, lse, q, k, v, seqIds, T, nH, nKv, hd);
  const group = nH / nKv, scale = 1 / Math.sqrt(hd), B = ATTN_QUERY_BLOCK;
  const blocks = queryBlocks(seqIds, T, B);
  const Kh = new Float32Array(T * hd), Vh = new Float32Array(T * hd);
  const Qb = new Float32Array(B * hd), Ob = new Float32Array(B * hd), S = new Float32Array(B * T);
  for (let kvh = 0; kvh < nKv; kvh++) {
    gatherHead(Kh, k, 0, T, nKv, hd, kvh, 1);
    gatherHead(Vh, v, 0, T, nKv, hd, kvh, 1);
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      for (const { t0, t1, s0 } of blocks) {
        const Bq = t1 - t0, Lk = t1 - s0;
        const sid = seqIds[t0]!;
        const q_ = Qb.subarray(0, Bq * hd), S_ = S.subarray(0, Bq * Lk), O_ = Ob.subarray(0, Bq * hd);
        const K_ = Kh.subarray(s0 * hd, t1 * hd), V_ = Vh.subarray(s0 * hd, t1 * hd);
        gatherHead(q_, q, t0, t1, nH, hd, h, scale);
        matmulForward(S_, q_, K_, null, Bq, hd, Lk);
        for (let i = 0; i < Bq; i++) {
          const t = t0 + i, row = i * Lk;
          let max = -Infinity;
          for (let j = 0; j < Lk; j++) {
            if (visible(seqIds, t, s0 + j, sid)) { if (S_[row + j]! > max) max = S_[row + j]!; } else S_[row + j] = -Infinity;
          }
          let sum = 0;
          for (let j = 0; j < Lk; j++) { const e = Math.exp(S_[row + j]! - max); S_[row + j] = e; sum += e; }
          const inv = 1 / sum;
          for (let j = 0; j < Lk; j++) S_[row + j]! *= inv;
          if (lse) lse[h * T + t] = max + Math.log(sum);
        }
        O_.fill(0);
        matmulBackwardInput(O_, S_, V_, Bq, hd, Lk);
        for (let t = t0; t < t1; t++) out.set(O_.subarray((t - t0) * hd, (t - t0 + 1) * hd), (t * nH + h) * hd);
      }
    }
  }
}

/**
 * dq, dk, dv += gradients of attentionForward (native, else blocked on the matmul kernels). Probabilities are
 * recomputed from the saved lse: P = exp(S - lse); dS = P (dO V^T - rowsum(dO * O)).
 */
export function attentionBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array, seqIds: Int32Array, d: AttentionDims): void {
  checkAttn(d);
  const { T, nHeads: nH, nKvHeads: nKv, headDim: hd } = d;
  const nk = nativeF32(dq, dk, dv, dout, q, k, v, out, lse);
  if (nk) return nk.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, seqIds, T, nH, nKv, hd);
  const group = nH / nKv, scale = 1 / Math.sqrt(hd), B = ATTN_QUERY_BLOCK;
  const blocks = queryBlocks(seqIds, T, B);
  const Kh = new Float32Array(T * hd), Vh = new Float32Array(T * hd), dKh = new Float32Array(T * hd), dVh = new Float32Array(T * hd);
  const Qb = new Float32Array(B * hd), dOb = new Float32Array(B * hd), dQb = new Float32Array(B * hd);
  const S = new Float32Array(B * T), dP = new Float32Array(B * T), D = new Float64Array(B);
  for (let kvh = 0; kvh < nKv; kvh++) {
    gatherHead(Kh, k, 0, T, nKv, hd, kvh, 1);
    gatherHead(Vh, v, 0, T, nKv, hd, kvh, 1);
    dKh.fill(0); dVh.fill(0);
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      for (const { t0, t1, s0 } of blocks) {
        const Bq = t1 - t0, Lk = t1 - s0;
        const sid = seqIds[t0]!;
        const q_ = Qb.subarray(0, Bq * hd), dO_ = dOb.subarray(0, Bq * hd), dQ_ = dQb.subarray(0, Bq * hd);
        const P_ = S.subarray(0, Bq * Lk), dP_ = dP.subarray(0, Bq * Lk);
        const K_ = Kh.subarray(s0 * hd, t1 * hd), V_ = Vh.subarray(s0 * hd, t1 * hd);
        gatherHead(q_, q, t0, t1, nH, hd, h, scale);
        gatherHead(dO_, dout, t0, t1, nH, hd, h, 1);
        for (let t = t0; t < t1; t++) {
          const a = (t * nH + h) * hd, b = (t - t0) * hd;
          let s = 0;
          for (let i = 0; i < hd; i++) s += dO_[b + i]! * out[a + i]!;
          D[t - t0] = s;
        }
        matmulForward(P_, q_, K_, null, Bq, hd, Lk);
        matmulForward(dP_, dO_, V_, null, Bq, hd, Lk);
        for (let i = 0; i < Bq; i++) {
          const t = t0 + i, row = i * Lk, l = lse[h * T + t]!, Di = D[i]!;
          for (let j = 0; j < Lk; j++) {
            if (visible(seqIds, t, s0 + j, sid)) {
              const p = Math.exp(P_[row + j]! - l);
              P_[row + j] = p;
              dP_[row + j] = p * (dP_[row + j]! - Di);
            } else {
              P_[row + j] = 0;
              dP_[row + j] = 0;
            }
          }
        }
        dQ_.fill(0);
        matmulBackwardInput(dQ_, dP_, K_, Bq, hd, Lk);
        scatterAddHead(dq, dQ_, t0, t1, nH, hd, h, scale);
        matmulBackwardWeight(dKh.subarray(s0 * hd, t1 * hd), dP_, q_, Bq, hd, Lk);
        matmulBackwardWeight(dVh.subarray(s0 * hd, t1 * hd), P_, dO_, Bq, hd, Lk);
      }
    }
    scatterAddHead(dk, dKh, 0, T, nKv, hd, kvh, 1);
    scatterAddHead(dv, dVh, 0, T, nKv, hd, kvh, 1);
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: out = silu(gate) * up

/** out[n] = silu(gate) * up (n = T * intermediate). */
export function swigluForward(out: Vec, gate: Vec, up: Vec, n: number): void {
  const nk = nativeF32(out, gate, up);
  if (nk) return nk.swigluForward(out as Float32Array, gate as Float32Array, up as Float32Array, n);
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

/** dgate, dup += gradients; silu'(g) = s(g) (1 + g (1 - s(g))). */
export function swigluBackward(dgate: Vec, dup: Vec, dout: Vec, gate: Vec, up: Vec, n: number): void {
  const nk = nativeF32(dgate, dup, dout, gate, up);
  if (nk) return nk.swigluBackward(dgate as Float32Array, dup as Float32Array, dout as Float32Array, gate as Float32Array, up as Float32Array, n);
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    const sg = 1 / (1 + Math.exp(-g));
    const dy = dout[i]!;
    dgate[i]! += dy * up[i]! * sg * (1 + g * (1 - sg));
    dup[i]! += dy * g * sg;
  }
}

// ---------------------------------------------------------------------------------------------
// Cross entropy over logits [T, V] with ignored labels (IGNORE_INDEX).

function checkTarget(y: number, t: number, V: number): void {
  check(y === IGNORE_INDEX || (y >= 0 && y < V), `target ${y} at position ${t} is neither ${IGNORE_INDEX} nor in [0, ${V})`);
}

/** Number of targets that count (not IGNORE_INDEX). */
export function countTargets(targets: Int32Array, T: number): number {
  let n = 0;
  for (let t = 0; t < T; t++) if (targets[t] !== IGNORE_INDEX) n++;
  return n;
}

/** The native cross entropy; the per-row losses are summed here in row order (any thread count, same sum). */
function nativeCrossEntropy(nk: NativeKernels, losses: Vec | null, logits: Float32Array, targets: Int32Array, T: number, V: number, grad: boolean, inv: number): number {
  const rows = new Float64Array(T);
  nk.crossEntropy(logits, targets, T, V, grad, inv, rows);
  let total = 0;
  for (let t = 0; t < T; t++) total += rows[t]!;
  if (losses) losses.set(rows);
  return total;
}

/**
 * Per-token losses -log softmax(logits)[target] into losses[T] (0 for ignored positions);
 * returns their SUM (divide by countTargets for the mean).
 */
export function crossEntropyForward(losses: Vec | null, logits: Vec, targets: Int32Array, T: number, V: number): number {
  const nk = nativeF32(logits);
  if (nk) return nativeCrossEntropy(nk, losses, logits as Float32Array, targets, T, V, false, 0);
  let total = 0;
  for (let t = 0; t < T; t++) {
    const y = targets[t]!;
    checkTarget(y, t, V);
    if (y === IGNORE_INDEX) { if (losses) losses[t] = 0; continue; }
    const o = t * V;
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (logits[o + j]! > max) max = logits[o + j]!;
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
    const l = max + Math.log(sum) - logits[o + y]!;
    if (losses) losses[t] = l;
    total += l;
  }
  return total;
}

/**
 * Fused loss + gradient, in place: logits[T,V] becomes dloss/dlogits where
 * loss = sum over counted tokens / denom; rows of ignored tokens become 0. Returns the loss SUM.
 */
export function crossEntropyForwardBackwardInPlace(logits: Vec, targets: Int32Array, T: number, V: number, denom: number): number {
  const nk = nativeF32(logits);
  if (nk) return nativeCrossEntropy(nk, null, logits as Float32Array, targets, T, V, true, 1 / denom);
  let total = 0;
  const inv = 1 / denom;
  for (let t = 0; t < T; t++) {
    const y = targets[t]!;
    checkTarget(y, t, V);
    const o = t * V;
    if (y === IGNORE_INDEX) { logits.fill(0, o, o + V); continue; }
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (logits[o + j]! > max) max = logits[o + j]!;
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
    const lse = max + Math.log(sum);
    total += lse - logits[o + y]!;
    for (let j = 0; j < V; j++) logits[o + j] = Math.exp(logits[o + j]! - lse) * inv;
    logits[o + y]! -= inv;
  }
  return total;
}

/** dlogits[T,V] += gradient of (sum of losses / denom). Separate form for tests. */
export function crossEntropyBackward(dlogits: Vec, logits: Vec, targets: Int32Array, T: number, V: number, denom: number): void {
  const inv = 1 / denom;
  for (let t = 0; t < T; t++) {
    const y = targets[t]!;
    checkTarget(y, t, V);
    if (y === IGNORE_INDEX) continue;
    const o = t * V;
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (logits[o + j]! > max) max = logits[o + j]!;
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
    const lse = max + Math.log(sum);
    for (let j = 0; j < V; j++) dlogits[o + j]! += Math.exp(logits[o + j]! - lse) * inv;
    dlogits[o + y]! -= inv;
  }
}

/**
 * Attention of nNew new queries (absolute positions past .. past+nNew-1) over a KV cache whose
 * rows 0 .. past+nNew-1 are filled (one sequence, causal). Forward only (generation).
 */
export function attentionForwardCached(out: Vec, q: Vec, kCache: Vec, vCache: Vec, nNew: number, past: number, nHeads: number, nKvHeads: number, headDim: number): void {
  check(nHeads % nKvHeads === 0, `heads (${nHeads}) must be a multiple of kv heads (${nKvHeads})`);
  const hd = headDim;
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hd);
  const qStride = nHeads * hd, kStride = nKvHeads * hd;
  const scores = new Float64Array(past + nNew);
  const acc = new Float64Array(hd);
  for (let t = 0; t < nNew; t++) {
    const last = past + t;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qStride + h * hd;
      const kvh = ((h / group) | 0) * hd;
      let max = -Infinity;
      for (let s = 0; s <= last; s++) {
        const ko = s * kStride + kvh;
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += q[qo + i]! * kCache[ko + i]!;
        dot *= scale;
        scores[s] = dot;
        if (dot > max) max = dot;
      }
      let sum = 0;
      acc.fill(0);
      for (let s = 0; s <= last; s++) {
        const p = Math.exp(scores[s]! - max);
        sum += p;
        const vo = s * kStride + kvh;
        for (let i = 0; i < hd; i++) acc[i]! += p * vCache[vo + i]!;
      }
      for (let i = 0; i < hd; i++) out[qo + i] = acc[i]! / sum;
    }
  }
}
