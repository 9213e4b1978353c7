// How the matrices of a projection group map onto ciphertexts and limb GEMMs.
//
// Tokens go along the ring coefficients (N per column block), one polynomial per input feature.
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

/**
 * Message polynomials of one column block, feature-major: out[i*N + t] = values[(block*N + t)*C + i]
 * for the tokens of this block; padding tokens are zero.
 */
export function blockMessage(values: Int8Array | Int16Array, T: number, C: number, N: number, block: number, out?: Int32Array): Int32Array {
  const m = out ?? new Int32Array(C * N);
  if (m.length !== C * N) throw new Error(`helora: message buffer has ${m.length} coefficients, expected ${C * N}`);
  const t0 = block * N;
  const tn = Math.min(N, T - t0);
  if (tn < N) m.fill(0);
  for (let t = 0; t < tn; t++) {
    const row = (t0 + t) * C;
    for (let i = 0; i < C; i++) m[i * N + t] = values[row + i];
  }
  return m;
}

/** Adds the decrypted block (rows x N, feature-major) into the token-major result acc[T x rows]. */
export function accumulateBlock(acc: Float64Array, block: Int32Array, T: number, rows: number, N: number, blockIndex: number): void {
  const t0 = blockIndex * N;
  const tn = Math.min(N, T - t0);
  for (let o = 0; o < rows; o++) {
    const src = o * N;
    for (let t = 0; t < tn; t++) acc[(t0 + t) * rows + o] += block[src + t];
  }
}
