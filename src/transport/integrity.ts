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
// model hash covers); each check then costs O(C + K) per token, against the client's encryption of
// the C or K inputs of that token. The vectors r are drawn from the CSPRNG and never leave the
// process: a server that returns W'x for W' != W gets (r^T (W' - W) x) ~ a random linear form of a
// nonzero vector, far outside the tolerance unless the change is within the noise.
//
// Tolerance per token: the HE error of each accumulated result is at most B = terms * (8-sigma bound
// at the full plaintext width + 1) result units (crypto/noise.ts resultErrorBound; failure
// probability 2.5e-14 per coefficient), plus float32 rounding of each result (2^-22 relative):
//   forward:  sx_t * B * sum_j sum_o |r_j[o]| sw_j[o]  +  2^-22 * sum_j sum_o |r_j[o] y_j[t,o]|
//   backward: sd_t * B * sum_i |r[i]|                  +  2^-22 * sum_i |r[i] dx[t,i]|
// What it does not catch: a change whose effect on every result is within that noise (a few
// result units, i.e. about one quantization step of one weight); timing and shapes are not results.

import { randomBytes } from 'node:crypto';
import { maxInnerDim, resultErrorBound, type RlweParams } from '../crypto/index.js';
import { featureChunks } from '../linear/layout.js';
import { quantizeBackwardInput } from '../linear/client.js';
import { PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { quantizePerToken, WEIGHT_BITS, type QuantizedWeights } from '../quant/quantize.js';

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

/** A result that does not match the public weights. */
export class IntegrityError extends Error {
  constructor(readonly layer: number, readonly group: ProjectionGroup, readonly direction: 'forward' | 'backward', message: string) {
    super(message);
    this.name = 'IntegrityError';
  }
}

export class ResultIntegrity {
  /** Time spent in the checks (and the input re-quantization they need), ms. */
  checkMs = 0;
  checks = 0;

  private constructor(private readonly groups: Record<ProjectionGroup, GroupCheck>[], private readonly actBits: number) {}

  /** From the quantized projections of every layer (model-server.ts loadQuantizedModel): draws the secret vectors. */
  static fromQuantizedLayers(layers: Record<ProjectionGroup, QuantizedWeights[]>[], params: RlweParams, actBits: number): ResultIntegrity {
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
    return new ResultIntegrity(groups, actBits);
  }

  private group(layer: number, group: ProjectionGroup): GroupCheck {
    const g = this.groups[layer]?.[group];
    if (!g) throw new Error(`helora: no integrity vectors for layer ${layer} group ${group}`);
    return g;
  }

  /** Checks y_j (T x rows_j) = x W_j^T for x (T x C); throws IntegrityError naming the layer and group. */
  checkForward(layer: number, group: ProjectionGroup, x: Float32Array, T: number, ys: Float32Array[]): void {
    const t0 = performance.now();
    const g = this.group(layer, group);
    const C = g.u.length;
    const q = quantizePerToken(x, T, C, this.actBits);
    for (let t = 0; t < T; t++) {
      let expected = 0;
      const xrow = t * C;
      for (let i = 0; i < C; i++) expected += g.u[i] * q.values[xrow + i];
      expected *= q.scales[t];
      let got = 0;
      let magnitude = 0;
      ys.forEach((y, j) => {
        const r = g.rForward[j];
        const rows = r.length;
        const yrow = t * rows;
        for (let o = 0; o < rows; o++) {
          const term = r[o] * y[yrow + o];
          got += term;
          magnitude += Math.abs(term);
        }
      });
      const tolerance = q.scales[t] * g.forwardBound * g.forwardWeight + FLOAT_SLACK * magnitude;
      if (!(Math.abs(got - expected) <= tolerance)) this.fail(layer, group, 'forward', t, got, expected, tolerance);
    }
    this.checks++;
    this.checkMs += performance.now() - t0;
  }

  /** Checks dx (T x C) = sum_j dy_j W_j (the weight scales folded into dy as the client does). */
  checkBackward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number, wScales: Float32Array[], dx: Float32Array): void {
    const t0 = performance.now();
    const g = this.group(layer, group);
    const C = g.rBackward.length;
    const K = g.v.length;
    const { q } = quantizeBackwardInput(dys, T, wScales, this.actBits);
    for (let t = 0; t < T; t++) {
      let expected = 0;
      const qrow = t * K;
      for (let o = 0; o < K; o++) expected += g.v[o] * q.values[qrow + o];
      expected *= q.scales[t];
      let got = 0;
      let magnitude = 0;
      const xrow = t * C;
      for (let i = 0; i < C; i++) {
        const term = g.rBackward[i] * dx[xrow + i];
        got += term;
        magnitude += Math.abs(term);
      }
      const tolerance = q.scales[t] * g.backwardBound * g.backwardWeight + FLOAT_SLACK * magnitude;
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
