// The plaintext "quantized" path of a projection group: exactly the integer arithmetic the
// encrypted path performs (same quantization, same stacking, same dequantization), without
// encryption. The encrypted path must reproduce it up to the documented HE error.

import {
  backwardAccumulate, DEFAULT_ACT_BITS, dequantizeBackward, dequantizeForward, forwardAccumulate, quantizePerToken, type QuantizedWeights,
} from '../quant/quantize.js';
import { quantizeBackwardInput } from './client.js';

export class QuantizedGroup {
  readonly inDim: number;
  readonly partRows: number[];
  /** Rows of every part stacked: the backward product against it sums over all parts at once. */
  readonly stacked: QuantizedWeights;

  constructor(readonly parts: QuantizedWeights[], readonly actBits = DEFAULT_ACT_BITS) {
    if (parts.length === 0) throw new Error('helora: a projection group needs at least one matrix');
    this.inDim = parts[0].cols;
    for (const p of parts) if (p.cols !== this.inDim) throw new Error(`helora: group mixes input sizes ${this.inDim} and ${p.cols}`);
    this.partRows = parts.map((p) => p.rows);
    const rows = this.partRows.reduce((s, r) => s + r, 0);
    const values = new Int8Array(rows * this.inDim);
    const scales = new Float32Array(rows);
    let r0 = 0;
    for (const p of parts) {
      values.set(p.values, r0 * this.inDim);
      scales.set(p.scales, r0);
      r0 += p.rows;
    }
    this.stacked = { values, scales, rows, cols: this.inDim };
  }

  /** y_j = x W_j^T for every part, x (T x inDim) quantized once per token. */
  forward(x: Float32Array, T: number): Float32Array[] {
    const q = quantizePerToken(x, T, this.inDim, this.actBits);
    const acc = forwardAccumulate(q, this.stacked);
    const total = this.stacked.rows;
    return this.parts.map((p, j) => {
      const r0 = this.partRows.slice(0, j).reduce((s, r) => s + r, 0);
      const part = new Float64Array(T * p.rows);
      for (let t = 0; t < T; t++) for (let o = 0; o < p.rows; o++) part[t * p.rows + o] = acc[t * total + r0 + o];
      return dequantizeForward(part, q.scales, p.scales, T, p.rows);
    });
  }

  /** dx = sum_j dy_j W_j, the dy_j quantized jointly per token (as the encrypted path does). */
  backward(dys: Float32Array[], T: number): Float32Array {
    const { q } = quantizeBackwardInput(dys, T, this.parts.map((p) => p.scales), this.actBits);
    return dequantizeBackward(backwardAccumulate(q, this.stacked), q.scales, T, this.inDim);
  }
}
