/**
 * The server's product on the ciphertexts of one column block, computed by the plain-TS reference
 * (src/kernels/zq-matmul.ts zqMatmulReference: 22-bit halves, exact in doubles) for the crypto
 * tests: for every output row o,
 *   aOut[o] = round_{logQ -> downloadBits}( sum_i W[o,i] a_i  mod q )
 *   bOut[o] = round_{logQ -> downloadBits}( sum_i W[o,i] (b'_i << (logQ - uploadBits))  mod q )
 * with round-half-up, results mod 2^downloadBits.
 */
import { zqMatmulReference } from '../kernels/zq-matmul.js';
import type { RlweParams } from './params.js';

export function serverProductReference(params: RlweParams, w: Int8Array, rows: number, cols: number,
  aBytes: Uint8Array, bBytes: Uint8Array): { aOut: Uint32Array; bOut: Uint32Array } {
  const n = params.ringDegree;
  const aOut = new Uint32Array(rows * n), bOut = new Uint32Array(rows * n);
  zqMatmulReference(params, w, rows, cols, aBytes, bBytes, n, aOut, bOut);
  return { aOut, bOut };
}
