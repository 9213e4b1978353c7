// How the matrices of a projection group map onto ciphertexts and limb GEMMs.
//
// Tokens go along the ring coefficients (N per column block), one polynomial per input feature
// (the packing itself is crypto/encode.ts encodeFeatures and crypto/rlwe.ts decryptAccumulate).
// A product over K input features is exact in the plaintext space only while
// max|q_x| * max|q_w| * K < 2^(P-1); longer sums are split into K-chunks ("terms") that the server
// returns separately and the client adds after decryption. Both sides derive the same layout from
// the shapes alone, so a response that does not match it is rejected.

/** One contiguous range of the (stacked) input features. */
export interface FeatureChunk {
  start: number;
  end: number;
}

/** Splits [0, K) into the fewest contiguous chunks of at most maxK features, of (nearly) equal size. */
export function featureChunks(K: number, maxK: number): FeatureChunk[] {
  if (!Number.isSafeInteger(K) || K <= 0) throw new Error(`helora: inner dimension must be a positive integer, got ${K}`);
  if (!Number.isSafeInteger(maxK) || maxK <= 0) throw new Error(`helora: chunk size must be a positive integer, got ${maxK}`);
  const count = Math.ceil(K / maxK);
  const size = Math.ceil(K / count);
  const chunks: FeatureChunk[] = [];
  for (let start = 0; start < K; start += size) chunks.push({ start, end: Math.min(K, start + size) });
  return chunks;
}

/** Column blocks needed for T tokens with ring degree N (the last one padded with zeros). */
export function blockCount(T: number, N: number): number {
  if (!Number.isSafeInteger(T) || T <= 0) throw new Error(`helora: token count must be a positive integer, got ${T}`);
  return Math.ceil(T / N);
}

/** A weight matrix as the noise bounds see it: values[rows x cols], row-major. */
interface WeightRows {
  values: ArrayLike<number>;
  rows: number;
  cols: number;
}

/** ||W_o||^2 of every row: the input of the forward product's noise bound (crypto/noise.ts). */
export function rowSqNorms(w: WeightRows): number[] {
  const out: number[] = [];
  for (let o = 0; o < w.rows; o++) {
    let s = 0;
    for (let i = 0; i < w.cols; i++) s += w.values[o * w.cols + i] ** 2;
    out.push(s);
  }
  return out;
}

/** Column norms of the stacked [W_1; W_2; ...]: the row norms of the summed backward product's matrix. */
export function stackedColSqNorms(parts: WeightRows[]): number[] {
  const C = parts[0].cols;
  const out = new Array<number>(C).fill(0);
  for (const p of parts) for (let o = 0; o < p.rows; o++) for (let i = 0; i < C; i++) out[i] += p.values[o * C + i] ** 2;
  return out;
}
