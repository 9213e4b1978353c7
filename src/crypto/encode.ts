/**
 * Batch packing of token-major matrices into feature polynomials and back (see linear/layout.ts
 * for the layout): feature i of the N tokens of column block `block` is polynomial i, token t
 * at coefficient t. Cache-blocked transposes: the plain loops stride through memory by N values
 * per access and cost as much as the encryption itself at 2048 features.
 */

/** Square tile of the transposes (2 x 32 x 32 values stay in L1). */
const TILE = 32;

/**
 * Polynomials i0 .. i0 + d - 1 of column block `block`: out[(i - i0)*N + t] = values[(block*N + t)*C + i]
 * (padding tokens zero). Equal to linear/layout.ts blockMessage for i0 = 0, d = C.
 */
export function encodeFeatures(values: Int8Array | Int16Array, T: number, C: number, N: number, block: number,
  i0 = 0, d = C, out?: Int32Array): Int32Array {
  const m = out ?? new Int32Array(d * N);
  if (m.length !== d * N) throw new Error(`helora: message buffer has ${m.length} coefficients, expected ${d * N}`);
  if (values.length < T * C) throw new Error(`helora: input has ${values.length} values, expected ${T} x ${C}`);
  if (!(i0 >= 0 && d >= 1 && i0 + d <= C)) throw new Error(`helora: feature range [${i0}, ${i0 + d}) outside [0, ${C})`);
  const t0 = block * N;
  const tn = Math.min(N, T - t0);
  if (tn < N) m.fill(0);
  for (let ta = 0; ta < tn; ta += TILE) {
    const tb = Math.min(tn, ta + TILE);
    for (let ia = i0; ia < i0 + d; ia += TILE) {
      const ib = Math.min(i0 + d, ia + TILE);
      for (let t = ta; t < tb; t++) {
        const row = (t0 + t) * C;
        for (let i = ia; i < ib; i++) m[(i - i0) * N + t] = values[row + i];
      }
    }
  }
  return m;
}

/** Token-major copy of the first tn tokens of rows polynomials: out[t*rows + o] = y[o*N + t]. */
export function decodeTokens(y: Int32Array, rows: number, N: number, tn: number): Int32Array {
  if (y.length !== rows * N || !(tn >= 1 && tn <= N)) throw new Error('helora: decodeTokens size mismatch');
  const out = new Int32Array(tn * rows);
  for (let oa = 0; oa < rows; oa += TILE) {
    const ob = Math.min(rows, oa + TILE);
    for (let ta = 0; ta < tn; ta += TILE) {
      const tb = Math.min(tn, ta + TILE);
      for (let t = ta; t < tb; t++) {
        const dst = t * rows;
        for (let o = oa; o < ob; o++) out[dst + o] = y[o * N + t];
      }
    }
  }
  return out;
}
