// How the matrices of a projection group map onto ciphertexts and limb GEMMs.
//
// Tokens go along the ring coefficients (N per column block), one polynomial per input feature
// (the packing itself is crypto/encode.ts encodeFeatures / decodeTokens).
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
