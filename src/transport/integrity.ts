// A Freivalds-style check of the server's results (issue 12, item 12). The weights are public, so a
// client that has them (its local model folder holds the projections) can check every product the
// server returns without recomputing it:
//
//   forward, group with matrices W_j (rows_j x C), quantized input xq_t with scale sx_t:
//     y_j[t,o] = sx_t * sw_j[o] * (Wq_j xq_t)[o]  (up to the HE noise), so for secret random r_j
//     sum_j r_j . y_j[t,:] = sx_t * (U . xq_t)   with U = sum_j sum_o r_j[o] sw_j[o] Wq_j[o,:]
//   backward, stacked rows K = sum_j rows_j, quantized folded gradient dq_t with scale sd_t:
//     dx[t,i] = sd_t * (Wq^T dq_t)[i], so for a secret random r over the C inputs
//     r . dx[t,:] = sd_t * (V . dq_t)            with V[o] = sum_i Wq[o,i] r[i]
//
// U and V are computed once per (layer, group) from the quantized public weights (the same ones the
// model hash covers); each check then costs O(C + rows) (forward) or O(K + C) (backward) multiply-
// adds per token on the quantized input the client encrypted and the result it decrypted. The vectors r are drawn from the CSPRNG and never leave the
// process: a server that returns W'x for W' != W gets (r^T (W' - W) x) ~ a random linear form of a
// nonzero vector, far outside the tolerance unless the change is within the noise.
//
// Tolerance per token: the HE error of each accumulated result is at most B = terms * (8-sigma bound
// at the full plaintext width + 1) result units (crypto/noise.ts resultErrorBound; failure
// probability 2.5e-14 per coefficient), plus float32 rounding of each result (2^-22 relative):
//   forward:  sx_t * B * sum_j sum_o |r_j[o]| sw_j[o]  +  2^-22 * sum_j sum_o |r_j[o] y_j[t,o]|
//   backward: sd_t * B * sum_i |r[i]|                  +  2^-22 * sum_i |r[i] dx[t,i]|
// Tokens: a request of more than tokensPerCheck tokens (default 256) has that many of its tokens
// checked, drawn by the CSPRNG after the answer arrived, which keeps the check near 1% of the
// client's crypto time at 2048 tokens. A substituted or backdoored projection changes the result of
// every token and is caught; a server that falsifies only m of T tokens escapes one request with
// probability about (1 - tokensPerCheck/T)^m (tokensPerCheck 0: every token is checked).
// What it does not catch: a change whose effect on every result is within that noise (a few
// result units, i.e. about one quantization step of one weight); timing and shapes are not results.

import { randomBytes } from 'node:crypto';
import { maxInnerDim, resultErrorBound, type RlweParams } from '../crypto/index.js';
import { featureChunks } from '../linear/layout.js';
import { PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { WEIGHT_BITS, type QuantizedWeights } from '../quant/quantize.js';

/** Relative float32 rounding allowance of one dequantized result. */
const FLOAT_SLACK = 2 ** -22;

/** Uniform in [-1, 1) from the CSPRNG. */
function secretRandomVector(n: number): Float64Array {
  const bytes = randomBytes(4 * n);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = bytes.readUInt32LE(4 * i) / 2 ** 31 - 1;
  return out;
}

interface GroupCheck {
  /** Forward: r_j per matrix, U over the C inputs, and sum_j sum_o |r_j[o]| sw_j[o]. */
  rForward: Float64Array[];
  u: Float64Array;
  forwardWeight: number;
  forwardBound: number;
  /** Backward: r over the C inputs, V over the stacked K rows, sum |r|. */
  rBackward: Float64Array;
  v: Float64Array;
  backwardWeight: number;
  backwardBound: number;
}

/** Tokens checked per request by default (all of them when a request has fewer). */
export const DEFAULT_TOKENS_PER_CHECK = 256;

/**
 * The tokens to check: all when T <= count, else `count` drawn uniformly (with replacement) by the
 * CSPRNG, so the server cannot know which of its results are checked.
 */
function tokensToCheck(T: number, count: number): Uint32Array | null {
  if (count <= 0 || T <= count) return null;
  const bytes = randomBytes(4 * count);
  const out = new Uint32Array(count);
  for (let k = 0; k < count; k++) out[k] = bytes.readUInt32LE(4 * k) % T;
  return out;
}

/** A result that does not match the public weights. */
export class IntegrityError extends Error {
  constructor(readonly layer: number, readonly group: ProjectionGroup, readonly direction: 'forward' | 'backward', message: string) {
    super(message);
    this.name = 'IntegrityError';
  }
}

export class ResultIntegrity {
  /** Time spent in the checks, ms. */
  checkMs = 0;
  checks = 0;

  private constructor(private readonly groups: Record<ProjectionGroup, GroupCheck>[], readonly tokensPerCheck: number) {}

  /** From the quantized projections of every layer (model-server.ts loadQuantizedModel): draws the secret vectors. */
  static fromQuantizedLayers(layers: Record<ProjectionGroup, QuantizedWeights[]>[], params: RlweParams, actBits: number,
    tokensPerCheck = DEFAULT_TOKENS_PER_CHECK): ResultIntegrity {
    const maxK = maxInnerDim(params, actBits, WEIGHT_BITS);
    const errorBound = (K: number, maxRowSqNorm: number): number => {
      const terms = featureChunks(K, maxK).length;
      // hamming weight of the secret at most N: an upper bound for any key
      return terms * (resultErrorBound(params, maxRowSqNorm, params.ringDegree, 8, params.plaintextBits) + 1);
    };
    const groups = layers.map((layer) => {
      const out = {} as Record<ProjectionGroup, GroupCheck>;
      for (const g of PROJECTION_GROUPS) {
        const ws = layer[g];
        const C = ws[0].cols;
        const K = ws.reduce((s, w) => s + w.rows, 0);
        const rForward = ws.map((w) => secretRandomVector(w.rows));
        const u = new Float64Array(C);
        let forwardWeight = 0;
        let maxRowSq = 0;
        ws.forEach((w, j) => {
          for (let o = 0; o < w.rows; o++) {
            const coef = rForward[j][o] * w.scales[o];
            forwardWeight += Math.abs(coef);
            const row = o * C;
            let sq = 0;
            for (let i = 0; i < C; i++) {
              const q = w.values[row + i];
              u[i] += coef * q;
              sq += q * q;
            }
            if (sq > maxRowSq) maxRowSq = sq;
          }
        });
        const rBackward = secretRandomVector(C);
        const v = new Float64Array(K);
        let base = 0;
        let maxColSq = 0;
        const colSq = new Float64Array(C);
        for (const w of ws) {
          for (let o = 0; o < w.rows; o++) {
            const row = o * w.cols;
            let s = 0;
            for (let i = 0; i < C; i++) {
              const q = w.values[row + i];
              s += q * rBackward[i];
              colSq[i] += q * q;
            }
            v[base + o] = s;
          }
          base += w.rows;
        }
        for (let i = 0; i < C; i++) if (colSq[i] > maxColSq) maxColSq = colSq[i];
        let backwardWeight = 0;
        for (let i = 0; i < C; i++) backwardWeight += Math.abs(rBackward[i]);
        out[g] = {
          rForward, u, forwardWeight, forwardBound: errorBound(C, maxRowSq),
          rBackward, v, backwardWeight, backwardBound: errorBound(K, maxColSq),
        };
      }
      return out;
    });
    return new ResultIntegrity(groups, tokensPerCheck);
  }

  private group(layer: number, group: ProjectionGroup): GroupCheck {
    const g = this.groups[layer]?.[group];
    if (!g) throw new Error(`helora: no integrity vectors for layer ${layer} group ${group}`);
    return g;
  }

  /**
   * Checks y_j (T x rows_j) = x W_j^T, where the client quantized x (T x C) to `values` with per-token
   * `scales` (the request it encrypted); throws IntegrityError naming the layer and group.
   */
  checkForward(layer: number, group: ProjectionGroup, values: Int8Array | Int16Array, scales: Float32Array, T: number, ys: Float32Array[]): void {
    const t0 = performance.now();
    const g = this.group(layer, group);
    const C = g.u.length;
    const { u, rForward } = g;
    if (values.length !== T * C || scales.length !== T) throw new Error(`helora: integrity check of layer ${layer} ${group}: ${values.length} inputs for ${T} x ${C}`);
    const sample = tokensToCheck(T, this.tokensPerCheck);
    for (let k = 0, n = sample ? sample.length : T; k < n; k++) {
      const t = sample ? sample[k] : k;
      let expected = 0;
      const xrow = t * C;
      for (let i = 0; i < C; i++) expected += u[i] * values[xrow + i];
      expected *= scales[t];
      let got = 0;
      let magnitude = 0;
      for (let j = 0; j < ys.length; j++) {
        const r = rForward[j];
        const y = ys[j];
        const rows = r.length;
        const yrow = t * rows;
        for (let o = 0; o < rows; o++) {
          const term = r[o] * y[yrow + o];
          got += term;
          magnitude += Math.abs(term);
        }
      }
      const tolerance = scales[t] * g.forwardBound * g.forwardWeight + FLOAT_SLACK * magnitude;
      if (!(Math.abs(got - expected) <= tolerance)) this.fail(layer, group, 'forward', t, got, expected, tolerance);
    }
    this.checks++;
    this.checkMs += performance.now() - t0;
  }

  /**
   * Checks dx (T x C) = sum_j dy_j W_j, where the client quantized the stacked, scale-folded dy_j to
   * `values` (T x K) with per-token `scales` (the request it encrypted).
   */
  checkBackward(layer: number, group: ProjectionGroup, values: Int8Array | Int16Array, scales: Float32Array, T: number, dx: Float32Array): void {
    const t0 = performance.now();
    const g = this.group(layer, group);
    const { v, rBackward } = g;
    const C = rBackward.length;
    const K = v.length;
    if (values.length !== T * K || scales.length !== T || dx.length !== T * C) throw new Error(`helora: integrity check of layer ${layer} ${group}: sizes do not match ${T} x ${K} -> ${C}`);
    const sample = tokensToCheck(T, this.tokensPerCheck);
    for (let k = 0, n = sample ? sample.length : T; k < n; k++) {
      const t = sample ? sample[k] : k;
      let expected = 0;
      const qrow = t * K;
      for (let o = 0; o < K; o++) expected += v[o] * values[qrow + o];
      expected *= scales[t];
      let got = 0;
      let magnitude = 0;
      const xrow = t * C;
      for (let i = 0; i < C; i++) {
        const term = rBackward[i] * dx[xrow + i];
        got += term;
        magnitude += Math.abs(term);
      }
      const tolerance = scales[t] * g.backwardBound * g.backwardWeight + FLOAT_SLACK * magnitude;
      if (!(Math.abs(got - expected) <= tolerance)) this.fail(layer, group, 'backward', t, got, expected, tolerance);
    }
    this.checks++;
    this.checkMs += performance.now() - t0;
  }

  private fail(layer: number, group: ProjectionGroup, direction: 'forward' | 'backward', t: number, got: number, expected: number, tolerance: number): never {
    throw new IntegrityError(layer, group, direction,
      `helora: integrity check failed: the server's ${direction} result for layer ${layer} group ${group} (token ${t}) does not match the public weights `
      + `(random projection ${got.toExponential(4)}, expected ${expected.toExponential(4)} +- ${tolerance.toExponential(2)}): the server did not compute with the model it claims; aborting`);
  }
}
